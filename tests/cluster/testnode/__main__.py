"""python -m testnode --config FILE ...: run the test node until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from .config import ConfigError, load
from .node import NodeAgent
from .runtime import Cgroups
from .server import KubeletServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testnode", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--api-server")
    parser.add_argument("--pki-dir")
    parser.add_argument("--state-dir")
    parser.add_argument("--cgroup-name")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        config = load(
            args.config,
            {
                "api_server": args.api_server,
                "pki_dir": args.pki_dir,
                "state_dir": args.state_dir,
                "cgroup_name": args.cgroup_name,
            },
        )
        cgroups = Cgroups(config.cgroup_name)
    except (ConfigError, RuntimeError, OSError) as err:
        print(f"testnode: {err}", file=sys.stderr)
        return 2
    api_port = urlsplit(config.api_server).port or 443
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agents = []
    for spec in config.nodes:
        agent = NodeAgent(config, spec, cgroups, api_port)
        server = KubeletServer(agent, config.pki_dir, spec.port)
        agent.port = server.server_address[1]
        server.start()
        agent.register()
        for target in (agent.heartbeat, agent.watch_pods):
            threading.Thread(
                target=target, name=f"{spec.name}-{target.__name__}", daemon=True
            ).start()
        agents.append(agent)
    logging.getLogger("testnode").info("serving %d node(s)", len(agents))
    stop.wait()
    for agent in agents:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
