#!/usr/bin/env python3
"""`make demo`: reproduce the training-upgrade incident and find its culprit.

Runs the real command line, as a newcomer would, on the local backend:

1. ``clusterbisect diff good.yaml bad.yaml`` -- the 45 settings that changed;
2. ``clusterbisect run good.yaml bad.yaml --fail-on ... -- python train.py`` -- the
   probes, their outcomes and the culprit with its evidence;
3. ``clusterbisect report STATE_DIR --format json`` -- read back to check the verdict.

Exits 0 when the culprit is the expected setting, 1 otherwise (or the failing step's
exit code). Every subprocess gets an argv list; nothing goes through a shell.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXPECTED = {"containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
FAIL_ON = "Weights only load failed"
CLI = [sys.executable, "-m", "clusterbisect.cli"]
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

INTRO = """\
The incident
  Last night's fine-tuning job (good.yaml) succeeded. Tonight's run of the same job,
  after a routine base-image upgrade (bad.yaml), crashed at its very last step. The two
  Job manifests, as `kubectl get job -o yaml` printed them, differ in dozens of
  settings: the image, NCCL_/TORCH_/OMP_ variables, cache paths, logging, resources,
  labels. Which one broke the job?

  clusterbisect diffs the two jobs, then runs probe jobs: the good job with a subset
  of the changes applied, halving the candidates each round, until one setting is
  left. Here the probes run on this machine (the local backend), with a miniature of
  the training script (train.py) that really trains, checkpoints and reloads.
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def activation() -> str | None:
    """The line that puts ``clusterbisect`` on PATH in the user's shell, None when it is
    there already: this environment's (``make demo`` installs it into .venv)."""
    bindir = Path(sys.executable).parent
    found = shutil.which("clusterbisect")
    if found and Path(found).parent.resolve() == bindir.resolve():
        return None
    activate = bindir / "activate"
    if activate.is_file():
        return f". {shown_path(activate)}      # once per shell: clusterbisect on PATH"
    return f"export PATH={shlex.quote(shown_path(bindir))}:$PATH"


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is under it."""
    return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)


def show_and_run(title: str, argv: list[str], shown: list[str]) -> int:
    """Print the command as a user would type it, run it, stream its output."""
    say(f"\n{BOLD}{title}{RESET}")
    say(f"{DIM}$ {shlex.join(shown)}{RESET}\n")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.run(argv, cwd=HERE, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reproduce the training-upgrade incident.")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / ".clusterbisect" / time.strftime("demo-%Y%m%d-%H%M%S"),
        help="where the session is kept (default: .clusterbisect/demo-<time>)",
    )
    state_dir = parser.parse_args(argv).state_dir.resolve()
    started = time.monotonic()
    say(f"{BOLD}clusterbisect demo: the training-upgrade incident{RESET}\n")
    say(INTRO)

    code = show_and_run(
        "Step 1/2. What changed between the good and the bad job?",
        [*CLI, "diff", "good.yaml", "bad.yaml"],
        ["clusterbisect", "diff", "good.yaml", "bad.yaml"],
    )
    if code != 0:
        say(f"\nclusterbisect diff failed with exit code {code}.")
        return code

    run_args = ["run", "good.yaml", "bad.yaml", "--backend", "local", "--fail-on", FAIL_ON]
    code = show_and_run(
        "Step 2/2. Which change breaks it? Bisect with probe jobs on this machine.",
        [*CLI, *run_args, "--state-dir", str(state_dir), "--", sys.executable, "train.py"],
        ["clusterbisect", *run_args, "--", "python", "train.py"],
    )
    if code not in (0, 1):
        say(f"\nclusterbisect run failed with exit code {code}.")
        return code

    report = subprocess.run(
        [*CLI, "report", str(state_dir), "--format", "json"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        result = json.loads(report.stdout)
    except ValueError:
        say(f"\nCould not read the report: {report.stderr.strip()}")
        return 1
    culprits = [{c["key"] for c in culprit["changes"]} for culprit in result.get("culprits", [])]
    elapsed = time.monotonic() - started
    rel_state = shown_path(state_dir)
    say(f"\n{BOLD}Verdict{RESET}")
    if result.get("status") == "found" and culprits == [EXPECTED]:
        searched = result.get("changes_searched", 0)
        probes = result["probe_count"]
        untestable = len(result.get("untestable", []))
        say(f"  Culprit: {next(iter(EXPECTED))} (unset -> 1)")
        say("  The new base image sets it; checkpoint loading then refuses the job's own")
        say(f"  TrainState object. Found with {probes} probes among {searched} testable changes")
        say(f"  in {elapsed:.1f} s; one setting at a time would take up to {searched} runs.")
        say(f"  ({untestable} more changes, such as the image, cannot be applied on this machine;")
        say("  see README.md for the same search on Ray or Kubernetes.)")
        say(f"\n  The session is in {rel_state}; render it again with:")
        if (line := activation()) is not None:
            say(f"    {line}")
        say(f"    clusterbisect report {rel_state} --format markdown")
        return 0
    say(f"  Unexpected result: status {result.get('status')!r}, culprits {culprits}.")
    say(f"  Expected exactly {sorted(EXPECTED)}. The session is in {rel_state}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
