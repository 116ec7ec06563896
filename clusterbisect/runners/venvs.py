"""Virtual environments for probes of ``pip freeze`` specs on this machine.

A probe of a pip freeze pair is the good freeze with some of the bad one's pins: it
runs in a virtual environment that holds exactly those pins. Environments are cached
by pin set (a hash of the install lines) under the session's ``local/venvs/``, so a
probe that is run again (a retry, a second confirmation) reuses its environment, and
a resumed session finds the ones it built.

They are made with ``uv`` when it is installed (``pip install 'clusterbisect[pip]'``:
``uv venv`` and ``uv pip install``, which reuse uv's global wheel cache across
environments and sessions), else with ``python -m venv`` and that environment's pip.
An environment whose installation fails is removed, and the failure is the probe's
infrastructure error (unresolved), with the installer's output in its log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterbisect.errors import InputError
from clusterbisect.log import get_logger

log = get_logger(__name__)

COMPLETE = ".clusterbisect-complete"  # written last: the environment is usable
REQUIREMENTS = "requirements.txt"
INSTALLERS = ("uv", "pip")


class InstallFailed(Exception):
    """Installing a pin set failed; ``output`` is what the installer printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.message = message
        self.output = output


def pin_set_key(lines: Sequence[str]) -> str:
    """The cache key of a pin set: the order of the lines does not matter."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


def find_uv() -> str | None:
    """The uv binary: the ``uv`` package's (the ``pip`` extra), else one on PATH."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def activate(env: dict[str, str], venv: Path) -> dict[str, str]:
    """``env`` as the environment's ``activate`` script would leave it: its ``bin``
    first on PATH (so ``python`` is the environment's), VIRTUAL_ENV set, no PYTHONHOME."""
    out = dict(env)
    out["PATH"] = os.pathsep.join(filter(None, [str(bin_dir(venv)), env.get("PATH", "")]))
    out["VIRTUAL_ENV"] = str(venv)
    out.pop("PYTHONHOME", None)
    return out


@dataclass
class Installed:
    """An environment ready for a probe, and how long it took (0 when cached)."""

    path: Path
    seconds: float
    cached: bool


class ProbeEnvironments:
    """Builds and caches one virtual environment per pin set under ``root``.

    ``python`` is the interpreter environments are made with; ``installer`` is ``uv``
    or ``pip`` (default: uv when found).
    """

    def __init__(
        self,
        root: Path,
        python: str | None = None,
        installer: str | None = None,
        timeout_s: float = 1800.0,
    ) -> None:
        self.root = root
        self.python = python or shutil.which("python3") or shutil.which("python") or "python3"
        self.uv = find_uv() if installer in (None, "uv") else None
        if installer == "uv" and self.uv is None:
            raise InputError(
                "uv is not installed: pip install 'clusterbisect[pip]', or choose pip",
                field="--pip-installer",
            )
        self.installer = "uv" if self.uv else "pip"
        self.timeout_s = timeout_s

    def path_of(self, lines: Sequence[str]) -> Path:
        return self.root / pin_set_key(lines)

    def ensure(self, lines: Sequence[str]) -> Installed:
        """The environment of ``lines``, built unless cached. Raises ``InstallFailed``."""
        venv = self.path_of(lines)
        if (venv / COMPLETE).is_file():
            return Installed(venv, 0.0, True)
        shutil.rmtree(venv, ignore_errors=True)  # a half-built one (killed mid-install)
        venv.mkdir(parents=True)
        requirements = venv / REQUIREMENTS
        requirements.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        started = time.monotonic()
        try:
            for argv in self._commands(venv, requirements):
                self._call(argv)
        except InstallFailed:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / COMPLETE).write_text(self.installer + "\n")
        seconds = time.monotonic() - started
        log.info("venv.built", venv=str(venv), installer=self.installer, seconds=round(seconds, 2))
        return Installed(venv, seconds, False)

    def _commands(self, venv: Path, requirements: Path) -> list[list[str]]:
        if self.uv:
            return [
                [
                    self.uv,
                    "venv",
                    "--quiet",
                    "--allow-existing",
                    "--python",
                    self.python,
                    str(venv),
                ],
                [
                    self.uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv),
                    "-r",
                    str(requirements),
                ],
            ]
        python = str(bin_dir(venv) / "python")
        return [
            [self.python, "-m", "venv", str(venv)],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-input", "-r", str(requirements)],
        ]  # fmt: skip

    def _call(self, argv: list[str]) -> None:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError as err:
            raise InstallFailed(f"cannot run {argv[0]!r}: {err.strerror}", "") from err
        except subprocess.TimeoutExpired as err:
            parts = [
                p.decode(errors="replace") if isinstance(p, bytes) else p or ""
                for p in (err.stdout, err.stderr)
            ]
            raise InstallFailed(f"{argv[1]} {argv[2]} timed out", "".join(parts)) from err
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
            what = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:3]))
            raise InstallFailed(f"{what} failed (exit {proc.returncode}): {last.strip()}", output)
