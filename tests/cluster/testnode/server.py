"""The kubelet's HTTPS API, as far as the API server's proxy needs it: containerLogs
(what `kubectl logs` and read_namespaced_pod_log reach) and healthz. Clients must
present a certificate signed by the cluster CA (the API server's kubelet client
certificate); no SubjectAccessReview is made."""

from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from . import logs

if TYPE_CHECKING:
    from .node import NodeAgent
    from .pod import PodWorker

log = logging.getLogger("testnode.server")


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("true", "1")


def _int(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    return int(values[-1]) if values and values[-1] != "" else None


class LogRequestError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def log_source(worker: PodWorker, container: str, previous: bool) -> tuple[Path, bool]:
    """(the log file, whether it is still written to), or the kubelet's refusal."""
    with worker.lock:
        state = worker.states.get(container)
        if state is None:
            names = [c["name"] for c in worker.spec.get("containers") or []]
            names += [c["name"] for c in worker.spec.get("initContainers") or []]
            if container in names:
                raise LogRequestError(
                    400,
                    f'container "{container}" in pod "{worker.name}" is waiting to start: '
                    "ContainerCreating",
                )
            raise LogRequestError(404, f'container "{container}" not found in pod "{worker.name}"')
        restarts = state.restart_count
        if previous:
            if "terminated" not in state.last_state:
                raise LogRequestError(
                    400,
                    f'previous terminated container "{container}" in pod "{worker.name}" not found',
                )
            return worker.log_path(container, restarts - 1), False
        if state.kind == "waiting":
            if "terminated" in state.last_state:
                return worker.log_path(container, restarts - 1), False
            reason = state.state["waiting"].get("reason", "")
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise LogRequestError(
                400,
                f'container "{container}" in pod "{worker.name}" is waiting to start: {reason}',
            )
        return worker.log_path(container, restarts), state.kind == "running"


class Handler(BaseHTTPRequestHandler):
    server: KubeletServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, code: int, text: str) -> None:
        data = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts in (["healthz"], ["livez"], ["readyz"]):
            self._reply(200, "ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, f"{url.path}: not served by the clusterbisect test node")
            return
        _, namespace, name, container = parts
        query = parse_qs(url.query, keep_blank_values=True)
        worker = self.server.node.find(namespace, name)
        if worker is None:
            self._reply(404, f'pod "{name}" does not exist')
            return
        try:
            options = logs.Options(
                follow=_flag(query, "follow"),
                previous=_flag(query, "previous"),
                timestamps=_flag(query, "timestamps"),
                tail_lines=_int(query, "tailLines"),
                limit_bytes=_int(query, "limitBytes"),
                since_seconds=_int(query, "sinceSeconds"),
                since_time=(query.get("sinceTime") or [""])[-1] or None,
                stream=(query.get("stream") or ["All"])[-1] or "All",
            )
            path, live = log_source(worker, container, options.previous)
        except LogRequestError as err:
            self._reply(err.code, str(err))
            return
        except ValueError as err:
            self._reply(400, f"invalid query: {err}")
            return
        if not live:
            options.follow = False
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in logs.stream(path, options, lambda: worker.running(container)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True


class KubeletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, node: NodeAgent, pki_dir: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.node = node
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki_dir / "kubelet.crt", pki_dir / "kubelet.key")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki_dir / "ca.crt")
        # The handshake happens in the handler's thread, so a slow client blocks no one.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True).start()
