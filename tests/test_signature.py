"""The failure signature's `--fail-on` text and the exit code: a warning in a passing
run is not the failure, and the report says when a regex cannot tell the runs apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import Cli, EnvPair, culprit_keys

from clusterbisect.config import SignatureOptions
from clusterbisect.outcome import FailureSignature, Outcome, RunResult

# Every run prints a DeprecationWarning; only B=2 makes it fatal.
WORKLOAD = """
import os, sys
print("DeprecationWarning: torch.load default will change")
if os.environ.get("B") == "2":
    print("RuntimeError: the DeprecationWarning became an error"); sys.exit(1)
"""


def test_nonzero_mode_counts_the_text_only_with_a_non_zero_exit() -> None:
    any_exit = FailureSignature(fail_on="Deprecation")
    nonzero = FailureSignature(fail_on="Deprecation", fail_on_exit="nonzero")
    warned = RunResult(0, "DeprecationWarning: x")
    crashed = RunResult(1, "DeprecationWarning: x\nRuntimeError")
    other = RunResult(1, "Segmentation fault")
    assert any_exit.classify(warned) is Outcome.FAIL
    assert nonzero.classify(warned) is Outcome.PASS
    assert nonzero.classify(crashed) is Outcome.FAIL
    assert nonzero.classify(other) is Outcome.UNRESOLVED
    assert nonzero.describe() == "a non-zero exit and output matching /Deprecation/"
    assert FailureSignature.from_dict(nonzero.to_dict()) == nonzero


def test_the_good_baseline_decides_an_unspecified_exit_rule() -> None:
    options = SignatureOptions(fail_on="Deprecation")
    assert not options.decide_exit_rule("p001", 1, "DeprecationWarning")  # not a pass
    assert not options.decide_exit_rule("p001", 0, "all good")  # no match
    assert options.decide_exit_rule("p001", 0, "DeprecationWarning: x")
    assert options.fail_on_exit == "nonzero" and options.decided
    assert "good baseline (p001) exited 0" in options.decided
    chosen = SignatureOptions(fail_on="Deprecation", fail_on_exit="any")
    assert not chosen.decide_exit_rule("p001", 0, "DeprecationWarning: x")  # the user chose


def run(cli: Cli, pair: EnvPair, *options: str, expect: int) -> dict:
    state = cli.cwd / f"state{len(list(cli.cwd.glob('state*')))}"
    proc = cli(
        "run", pair.good, pair.bad, "--json", "--state-dir", str(state),
        "--fail-on", "DeprecationWarning", *options, "--", *pair.command, expect=expect,
    )  # fmt: skip
    return json.loads(proc.stdout)


def test_a_warning_in_the_good_baseline_makes_the_default_exit_nonzero(
    cli: Cli, env_pair: Callable[..., EnvPair]
) -> None:
    pair = env_pair(["A=1", "B=1", "C=1"], ["A=2", "B=2", "C=2"], WORKLOAD)
    result = run(cli, pair, expect=0)
    assert culprit_keys(result) == [["env.B"]]
    assert result["probes"][0]["outcome"] == "pass" and result["probes"][0]["exit_code"] == 0
    decided, both = result["notes"][0], result["notes"][-1]
    assert decided.startswith("the good baseline (p001) exited 0 with output matching")
    assert both.startswith("the --fail-on regex /DeprecationWarning/ matches the output of both")
    assert "only the non-zero exit tells them apart" in both
    stored = json.loads((Path(result["state_dir"]) / "session.json").read_text())
    assert stored["config"]["signature"]["fail_on_exit"] == "nonzero"
    assert result["signature"]["expected"].startswith("a non-zero exit and output matching")

    # Asked for explicitly, `any` keeps the text alone as the failure: the good
    # baseline fails, and the report says what to do.
    result = run(cli, pair, "--fail-on-exit", "any", expect=1)
    assert result["status"] == "baseline_failed"
    assert "--fail-on-exit nonzero" in result["notes"][-1]


def test_step_mode_decides_the_same_way(cli: Cli, env_pair: Callable[..., EnvPair]) -> None:
    pair = env_pair(["A=1", "B=1"], ["A=2", "B=2"], WORKLOAD)
    cli("start", pair.good, pair.bad, "--fail-on", "DeprecationWarning", "--", *pair.command,
        expect=0)  # fmt: skip
    log = cli.cwd / "p001.out"
    log.write_text("DeprecationWarning: torch.load default will change\n")
    recorded = cli.json("mark", "--exit-code", "0", "--log", str(log))
    assert recorded["recorded"]["outcome"] == "pass"
    status = cli.json("status")
    stored = json.loads((Path(status["state_dir"]) / "session.json").read_text())
    assert stored["config"]["signature"]["fail_on_exit"] == "nonzero"
