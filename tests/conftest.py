"""Shared test helpers: the command line as a user runs it, and the input files.

- ``CLI`` is the one way tests start the real command line (``python -m clusterbisect.cli``);
- the ``cli`` fixture runs it as a subprocess, checks that no traceback leaked, and
  parses its one JSON document on request (``cli.json(...)``);
- ``FIXTURES`` and ``EXAMPLES`` are the spec folders; ``env_pair`` writes a good and a
  bad env file with a workload script next to them;
- live tests must not be skipped where they are required (``make live``, ``make test``:
  ``CLUSTERBISECT_LIVE_REQUIRED=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "clusterbisect.cli"]
REQUIRED = os.environ.get("CLUSTERBISECT_LIVE_REQUIRED") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRED and not os.environ.get("CLUSTERBISECT_KUBECONFIG"):
        raise pytest.UsageError(
            "CLUSTERBISECT_LIVE_REQUIRED=1 but CLUSTERBISECT_KUBECONFIG is not set: "
            "the live suite cannot run (start the cluster with `make cluster`)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRED and report.skipped and item.get_closest_marker("live") is not None:
        report.outcome = "failed"
        report.longrepr = f"a live test was skipped where it must run: {report.longrepr}"


@dataclass
class Cli:
    """The real command line, run as a subprocess in ``cwd``."""

    cwd: Path

    def __call__(
        self,
        *args: str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 300,
        expect: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``clusterbisect ARGS``. ``env`` replaces the environment, ``extra_env``
        adds to it; ``expect`` checks the exit code. A traceback always fails the test."""
        environment = dict(env if env is not None else os.environ)
        environment.update(extra_env or {})
        proc = subprocess.run(
            [*CLI, *args],
            cwd=cwd or self.cwd,
            env=environment,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr[-3000:])
        return proc

    def json(self, *args: str, **kwargs: Any) -> Any:
        """The one JSON document the command prints (``--json`` is added before ``--``)."""
        at = args.index("--") if "--" in args else len(args)
        if "--json" not in args and args[:1] not in (("call",), ("tools",)):
            args = (*args[:at], "--json", *args[at:])
        return json.loads(self(*args, **kwargs).stdout)

    def call(self, tool: str, arguments: Any, *, raw: str | None = None, **kwargs: Any) -> Any:
        """``clusterbisect call TOOL``: exit code and the one JSON document on stdout."""
        kwargs.setdefault("expect", None)
        proc = self(
            "call",
            tool,
            "--input",
            "-",
            input=raw if raw is not None else json.dumps(arguments),
            **kwargs,
        )
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Run the real CLI; the working directory defaults to the test's ``tmp_path``."""
    return Cli(tmp_path)


def culprit_keys(result: dict[str, Any]) -> list[list[str]]:
    """The culprits of a result as sorted key lists, sorted (order-free comparisons)."""
    return sorted(sorted(c["key"] for c in culprit["changes"]) for culprit in result["culprits"])


@dataclass
class EnvPair:
    """A good and a bad env file, and the argv of the workload written beside them."""

    good: str
    bad: str
    command: list[str]


@pytest.fixture
def env_pair(tmp_path: Path) -> Callable[..., EnvPair]:
    """Write ``good.env``/``bad.env`` (one variable per line) and ``work.py`` in tmp_path."""

    def write(
        good: Sequence[str] | Mapping[str, str],
        bad: Sequence[str] | Mapping[str, str],
        workload: str = "",
    ) -> EnvPair:
        for name, lines in (("good.env", good), ("bad.env", bad)):
            if isinstance(lines, Mapping):
                lines = [f"{k}={v}" for k, v in lines.items()]
            (tmp_path / name).write_text("".join(f"{line}\n" for line in lines))
        (tmp_path / "work.py").write_text(workload)
        return EnvPair(
            str(tmp_path / "good.env"),
            str(tmp_path / "bad.env"),
            [sys.executable, str(tmp_path / "work.py")],
        )

    return write
