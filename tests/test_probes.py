"""The probe workloads in probes/: one JSON verdict line each, and honest exit codes.

Each probe runs as a real subprocess, the way a probe job runs it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

PROBES = ROOT / "probes"


def probe(
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    **kw: Any,
) -> tuple[int, dict[str, Any]]:
    """Run ``probes/NAME.py``; return its exit code and its single JSON line."""
    done = subprocess.run(
        [python, str(PROBES / f"{name}.py"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        **kw,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got:\n{done.stdout}\n{done.stderr}"
    verdict = json.loads(lines[0])
    assert verdict["probe"] == name
    assert verdict["verdict"] in {"pass", "fail", "skipped", "error"}
    return done.returncode, verdict


# --- import_check ---------------------------------------------------------------------


def test_import_check_passes_and_reports_versions() -> None:
    code, out = probe("import_check", "json", "os.path", "yaml")
    assert (code, out["verdict"]) == (0, "pass")
    assert out["failed"] == []
    assert out["modules"]["yaml"]["ok"] is True
    import yaml

    assert out["modules"]["yaml"]["version"] == yaml.__version__


def test_import_check_fails_on_a_missing_module() -> None:
    code, out = probe("import_check", "json", "surely_not_installed_mod")
    assert (code, out["verdict"]) == (1, "fail")
    assert out["failed"] == ["surely_not_installed_mod"]
    assert "ModuleNotFoundError" in out["modules"]["surely_not_installed_mod"]["error"]
    assert out["modules"]["json"]["ok"] is True


def test_import_check_checks_a_pinned_version() -> None:
    import yaml

    code, out = probe("import_check", f"yaml=={yaml.__version__}")
    assert code == 0
    code, out = probe("import_check", "yaml==0.0.1")
    assert (code, out["verdict"]) == (1, "fail")
    assert "expected version 0.0.1" in out["modules"]["yaml"]["error"]


def test_import_check_reads_modules_from_the_environment() -> None:
    code, out = probe("import_check", env={"PROBE_IMPORTS": "json, csv  no_such_mod_x"})
    assert code == 1
    assert set(out["modules"]) == {"json", "csv", "no_such_mod_x"}
    code, out = probe("import_check", "--env", "MY_MODULES", env={"MY_MODULES": "json"})
    assert (code, set(out["modules"])) == (0, {"json"})


def test_import_check_usage_errors_exit_2() -> None:
    code, out = probe("import_check", env={"PROBE_IMPORTS": ""})
    assert (code, out["verdict"]) == (2, "error")
    code, out = probe("import_check", "not a module")
    assert (code, out["verdict"]) == (2, "error")


def test_import_check_isolate_survives_a_crashing_import(tmp_path: Path) -> None:
    # A native extension that aborts at import kills the interpreter; --isolate keeps
    # the probe alive and blames that module.
    (tmp_path / "crashy_ext.py").write_text("import os\nos.abort()\n")
    env = {"PYTHONPATH": str(tmp_path)}
    code, out = probe("import_check", "--isolate", "json", "crashy_ext", env=env)
    assert (code, out["verdict"]) == (1, "fail")
    assert out["failed"] == ["crashy_ext"]
    assert "interpreter exited with code" in out["modules"]["crashy_ext"]["error"]
    assert out["modules"]["json"]["ok"] is True


# --- train_loop -----------------------------------------------------------------------


def test_train_loop_converges() -> None:
    code, out = probe("train_loop")
    assert (code, out["verdict"]) == (0, "pass")
    assert out["final_loss"] < 0.7 * out["initial_loss"]
    assert out["accuracy"] > 0.8


def test_train_loop_fails_when_the_loss_does_not_improve() -> None:
    code, out = probe("train_loop", "--steps", "1")
    assert (code, out["verdict"]) == (1, "fail")
    assert "improvement" in out["error"]
    code, out = probe("train_loop", "--lr", "1e6")  # diverges
    assert code == 1


def test_train_loop_checkpoint_roundtrip(tmp_path: Path) -> None:
    code, out = probe("train_loop", "--steps", "50", "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert code == 0
    assert out["checkpoint"]["intact"] is True and out["checkpoint"]["bytes"] > 0
    assert list((tmp_path / "ckpt").iterdir()) == []  # cleaned up after itself
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out = probe("train_loop", "--steps", "50", "--checkpoint-dir", str(blocker / "ckpt"))
    assert (code, out["verdict"]) == (1, "fail")
    assert "checkpoint in" in out["error"]


def test_train_loop_usage_error() -> None:
    code, out = probe("train_loop", "--min-improvement", "1.5")
    assert (code, out["verdict"]) == (2, "error")


# --- collective_smoke -----------------------------------------------------------------


def _torch_python() -> str | None:
    """An interpreter with torch: $CLUSTERBISECT_TORCH_PYTHON, or this one if it has torch."""
    configured = os.environ.get("CLUSTERBISECT_TORCH_PYTHON")
    if configured:
        return configured
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def _has_torch(python: str) -> bool:
    check = [python, "-c", "import torch.distributed"]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def test_collective_smoke_skips_cleanly_without_torch(tmp_path: Path) -> None:
    # An interpreter that cannot import torch: a module named torch that fails to load.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    code, out = probe("collective_smoke", env={"PYTHONPATH": str(tmp_path)})
    assert (code, out["verdict"]) == (0, "skipped")
    assert "torch is not importable" in out["reason"]


def test_collective_smoke_usage_error() -> None:
    code, out = probe("collective_smoke", "--world-size", "1")
    assert (code, out["verdict"]) == (2, "error")


@pytest.mark.skipif(_torch_python() is None, reason="needs torch (set CLUSTERBISECT_TORCH_PYTHON)")
def test_collective_smoke_all_reduce_over_gloo() -> None:
    python = _torch_python()
    assert python is not None and _has_torch(python)
    code, out = probe("collective_smoke", "--timeout", "60", python=python)
    assert (code, out["verdict"]) == (0, "pass"), out
    assert [r["rank"] for r in out["ranks"]] == [0, 1]
    assert all(r["all_reduce"] and r["broadcast"] and r["barrier"] for r in out["ranks"])


@pytest.mark.skipif(_torch_python() is None, reason="needs torch (set CLUSTERBISECT_TORCH_PYTHON)")
def test_collective_smoke_fails_on_a_bad_interface() -> None:
    python = _torch_python()
    assert python is not None
    env = {"GLOO_SOCKET_IFNAME": "nosuchif0"}
    code, out = probe("collective_smoke", "--timeout", "20", python=python, env=env)
    assert (code, out["verdict"]) == (1, "fail")
    assert all(not r["ok"] for r in out["ranks"])
    assert "nosuchif0" in json.dumps(out["ranks"])


# --- shm_ulimit_check -----------------------------------------------------------------


def test_shm_ulimit_check_passes_with_reachable_thresholds() -> None:
    code, out = probe(
        "shm_ulimit_check", "--min-shm-mb", "1", "--min-nofile", "64", "--min-nproc", "1"
    )
    assert (code, out["verdict"]) == (0, "pass"), out
    assert {c["check"] for c in out["checks"]} == {"shm", "nofile", "nproc"}
    shm = next(c for c in out["checks"] if c["check"] == "shm")
    expected = shutil.disk_usage("/dev/shm").total // (1024 * 1024)
    assert shm["size"] == expected


def test_shm_ulimit_check_fails_on_a_low_open_file_limit() -> None:
    def lower_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    code, out = probe(
        "shm_ulimit_check",
        "--min-shm-mb",
        "0",
        "--min-nofile",
        "1024",
        "--min-nproc",
        "0",
        preexec_fn=lower_nofile,
    )
    assert (code, out["verdict"]) == (1, "fail")
    assert out["failed"] == ["nofile"]
    assert out["checks"][0]["soft"] == 256


def test_shm_ulimit_check_write_test_and_missing_path(tmp_path: Path) -> None:
    code, out = probe(
        "shm_ulimit_check",
        "--shm-path",
        str(tmp_path),
        "--min-shm-mb",
        "1",
        "--write-test-mb",
        "2",
        "--min-nofile",
        "0",
        "--min-nproc",
        "0",
    )
    assert code == 0
    assert out["checks"][0]["write_test"] == {"ok": True, "mb": 2}
    assert list(tmp_path.iterdir()) == []
    code, out = probe("shm_ulimit_check", "--shm-path", str(tmp_path / "missing"))
    assert code == 1
    assert "shm" in out["failed"]


def test_shm_ulimit_check_usage_error() -> None:
    code, out = probe("shm_ulimit_check", "--min-nofile", "-1")
    assert (code, out["verdict"]) == (2, "error")
