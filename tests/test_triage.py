"""Fleet triage end to end on small hand-built fleets, with scores computed by hand.

Every score is -log10 of Fisher's one-sided p-value, P(X >= a) for X hypergeometric:
N jobs analysed, K of them failed, n with the setting, a failed with it. The tables
below are chosen so that only the extreme term is left and p is one ratio of
binomial coefficients.
"""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TRAINER, export, failed_with, job, pod, secret_fleet

from clusterbisect.diff import diff
from clusterbisect.errors import InputError
from clusterbisect.redact import REDACTED
from clusterbisect.specs import load_spec
from clusterbisect.triage import (
    TriageOptions,
    TriageRequest,
    TriageSourceOptions,
    load_priors,
    render_text,
    triage,
)


def since(duration: str) -> TriageSourceOptions:
    return TriageSourceOptions(since=duration)


def suspect(result: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in result["suspects"] if s["key"] == key)


FLAG = TRAINER + "env.FLAG"


def test_eight_jobs_name_the_suspect_but_claim_no_significance(
    fleet_file: Callable[..., str],
) -> None:
    # FLAG=on: 3 of 4 failed; FLAG=off: 0 of 4. p = C(3,3) C(5,1) / C(8,4) = 5/70.
    rows = [({"FLAG": "on"}, "failed")] * 3 + [({"FLAG": "on"}, "succeeded")]
    rows += [({"FLAG": "off"}, "succeeded")] * 4
    result = triage(TriageRequest([fleet_file(rows)])).to_dict()
    top = result["suspects"][0]
    assert (top["key"], top["value"], top["failed"], top["total"]) == (FLAG, "on", 3, 4)
    assert (top["failure_rate"], top["rate_without"]) == (0.75, 0.0)
    assert top["score"] == pytest.approx(-math.log10(5 / 70), abs=0.01)  # 1.15
    # Two job sets tested (FLAG=on, FLAG=off): a suspect needs log10(2 / 0.05) = 1.60.
    assert result["tested"] == 2
    assert result["threshold"] == pytest.approx(math.log10(2 / 0.05), abs=0.01)
    assert top["significant"] is False
    assert result["status"] == "no_significant_suspect"
    assert "more than chance allows" in result["message"]
    # Only the setting with a higher failure rate is a suspect.
    assert [s["key"] for s in result["suspects"]] == [FLAG]


def twenty(
    extra: list[tuple[dict[str, str], str]] | None = None,
) -> list[tuple[dict[str, str], str]]:
    """FLAG=on: 9 of 10 failed; FLAG=off: 0 of 10."""
    rows = [({"FLAG": "on", "BASE": "1"}, "failed")] * 9 + [
        ({"FLAG": "on", "BASE": "1"}, "succeeded")
    ]
    rows += [({"FLAG": "off", "BASE": "1"}, "succeeded")] * 10
    return rows + (extra or [])


def test_single_culprit_is_significant_and_the_contract_fields_are_there(
    fleet_file: Callable[..., str],
) -> None:
    result = triage(TriageRequest([fleet_file(twenty())])).to_dict()
    # N=20, K=9, n=10, a=9: p = C(9,9) C(11,1) / C(20,10) = 11/184756.
    top = result["suspects"][0]
    assert top["key"] == FLAG and top["value"] == "on"
    assert top["score"] == pytest.approx(-math.log10(11 / math.comb(20, 10)), abs=0.01)  # 4.23
    assert top["significant"] is True
    assert result["status"] == "suspects_found"
    for field in ("jobs", "failed", "succeeded", "signatures", "suspects", "pair", "files"):
        assert field in result
    assert (result["jobs"], result["failed"], result["succeeded"]) == (20, 9, 11)
    assert set(top) >= {
        "key",
        "value",
        "failed",
        "total",
        "failure_rate",
        "rate_without",
        "score",
        "bundle",
    }
    signature = result["signatures"][0]
    assert set(signature) >= {"signature", "count", "examples"}
    assert signature["count"] == 9 and len(signature["examples"]) == 3
    # Ranks, addresses and pod names are masked: nine failures, one signature.
    assert signature["signature"] == (
        "exit 1: RuntimeError: NCCL error on rank <n> at <hex> (pod <pod>)"
    )
    assert set(result["pair"]) >= {"good", "bad", "changes"}
    json.dumps(result)  # one JSON document


def test_background_failures_are_not_evidence(fleet_file: Callable[..., str]) -> None:
    # Three OOMKilled jobs among FLAG=off: another signature, left out of the analysis.
    rows = twenty([({"FLAG": "off", "BASE": "1"}, "oom")] * 3)
    result = triage(TriageRequest([fleet_file(rows)])).to_dict()
    assert (result["failed"], result["explained"], result["background"]) == (12, 9, 3)
    assert result["analysed"] == 20
    top = suspect(result, FLAG)
    assert (top["failed"], top["total"], top["total_without"]) == (9, 10, 10)
    assert top["score"] == pytest.approx(-math.log10(11 / math.comb(20, 10)), abs=0.01)
    assert [(s["count"], s["explained"]) for s in result["signatures"]] == [(9, True), (3, False)]
    assert result["signatures"][1]["signature"] == "OOMKilled exit 137"


def test_signature_regex_explains_another_failure(fleet_file: Callable[..., str]) -> None:
    rows = twenty([({"FLAG": "off", "BASE": "1", "BIG": "yes"}, "oom")] * 3)
    result = triage(
        TriageRequest([fleet_file(rows)], TriageOptions(signature="OOMKilled"))
    ).to_dict()
    assert (result["explained"], result["background"], result["analysed"]) == (3, 9, 14)
    # BIG=yes: 3 of 3 failed, absent: 0 of 11. p = 1 / C(14,3).
    top = result["suspects"][0]
    assert (top["key"], top["failed"], top["total"]) == (TRAINER + "env.BIG", 3, 3)
    assert top["score"] == pytest.approx(math.log10(math.comb(14, 3)), abs=0.01)  # 2.56
    with pytest.raises(InputError, match=r"no failed job matches 'Segfault'.*NCCL"):
        triage(TriageRequest([fleet_file(rows)], TriageOptions(signature="Segfault")))
    with pytest.raises(InputError, match="--signature: invalid regular expression"):
        triage(TriageRequest([fleet_file(rows)], TriageOptions(signature="(unclosed")))


def test_settings_that_always_change_together_are_one_bundle(tmp_path: Path) -> None:
    upgraded = {"TIMEOUT": "60", "NEWDEF": "1"}
    rows: list[tuple[dict[str, str], str]] = [(upgraded, "failed")] * 8 + [
        (upgraded, "succeeded")
    ] * 2
    old_rows = [({"TIMEOUT": "30"}, "succeeded")] * 10
    jobs, pods = [], []
    for i, (env, outcome) in enumerate(rows + old_rows):
        j = job(
            f"train-{i:02d}",
            outcome,
            env=env,
            image=f"registry.example.com/train:{2 if i < 10 else 1}",
        )
        jobs.append(j)
        pods.append(failed_with(j, i) if outcome == "failed" else pod(j))
    result = triage(TriageRequest([export(tmp_path / "f.json", jobs + pods)])).to_dict()
    top = result["suspects"][0]
    # The image names the bundle; the env settings changed with it are its bundle.
    assert (top["key"], top["value"]) == (TRAINER + "image", "registry.example.com/train:2")
    assert top["bundle"] == [TRAINER + "env.NEWDEF", TRAINER + "env.TIMEOUT"]
    # N=20, K=8, n=10, a=8: p = C(8,8) C(12,2) / C(20,10) = 66/184756.
    assert top["score"] == pytest.approx(-math.log10(66 / math.comb(20, 10)), abs=0.01)  # 3.45
    assert len([s for s in result["suspects"] if s["score"] == top["score"]]) == 1
    assert "always change together" in render_text(
        triage(TriageRequest([str(tmp_path / "f.json")]))
    )


def test_a_pair_that_fails_only_together_is_an_interaction(fleet_file: Callable[..., str]) -> None:
    rows = []
    for a in ("0", "1"):
        for b in ("0", "1"):
            rows += [({"A": a, "B": b}, "failed" if a == b == "1" else "succeeded")] * 8
    result = triage(TriageRequest([fleet_file(rows)])).to_dict()
    keys = [s["key"] for s in result["suspects"][:2]]
    assert keys == [TRAINER + "env.A", TRAINER + "env.B"]
    # Each: N=32, K=8, n=16, a=8: p = C(24,8) / C(32,16) = 735471/601080390.
    for s in result["suspects"][:2]:
        assert s["score"] == pytest.approx(-math.log10(735471 / 601080390), abs=0.01)  # 2.91
        assert s["significant"]
    (x,) = result["interactions"]
    assert x["keys"] == keys
    assert (x["both"]["failed"], x["both"]["total"]) == (8, 8)
    assert (x["first_only"]["failed"], x["first_only"]["total"]) == (0, 8)
    assert (x["second_only"]["failed"], x["second_only"]["total"]) == (0, 8)
    # Both (8/8) against one alone (0/8): p = 1 / C(16,8).
    assert x["score"] == pytest.approx(math.log10(math.comb(16, 8)), abs=0.01)  # 4.11
    # The pair holds both: the bad job has A=1 and B=1, the good job neither.
    assert result["pair"]["changes"] == 2
    assert result["pair"]["candidates"] == keys


def test_a_setting_rolled_out_with_the_culprit_is_explained_away(
    fleet_file: Callable[..., str],
) -> None:
    # C=1 (10 jobs, all failed); D=new went out to the same jobs and 5 more, all fine.
    rows = [({"C": "1", "D": "new"}, "failed")] * 10 + [({"C": "0", "D": "new"}, "succeeded")] * 5
    rows += [({"C": "0", "D": "old"}, "succeeded")] * 25
    result = triage(TriageRequest([fleet_file(rows)])).to_dict()
    culprit, confounder = result["suspects"][0], suspect(result, TRAINER + "env.D")
    assert culprit["key"] == TRAINER + "env.C" and culprit["significant"]
    assert culprit["score"] == pytest.approx(math.log10(math.comb(40, 10)), abs=0.01)
    # On its own D would pass the bar (p = C(30,5) / C(40,15)), but among the jobs
    # without C=1 it goes with no failure at all.
    assert confounder["score"] == pytest.approx(
        -math.log10(math.comb(30, 5) / math.comb(40, 15)), abs=0.01
    )
    assert confounder["score"] > result["threshold"]
    assert confounder["significant"] is False
    assert confounder["explained_by"] == TRAINER + "env.C"
    assert result["message"].startswith("1 significant suspect ")


def test_the_pair_is_the_closest_and_its_files_diff_to_it(
    tmp_path: Path, fleet_file: Callable[..., str]
) -> None:
    rows = twenty()
    # Every good job but train-19 differs from the bad ones in one more setting.
    rows[10:19] = [({"FLAG": "off", "BASE": "2"}, "succeeded")] * 9
    path = fleet_file(rows)
    out = tmp_path / "out"
    result = triage(TriageRequest([path], TriageOptions(out=str(out)))).to_dict()
    pair = result["pair"]
    assert pair["good"] == "train-19" and pair["bad"] == "train-00"
    assert pair["changes"] == 1 and pair["candidates"] == [FLAG]
    assert pair["workload"] == "train" and pair["required"] == [FLAG]
    files = result["files"]
    assert set(files) == {"good", "bad", "result"}
    good, bad = load_spec(files["good"]), load_spec(files["bad"])
    assert [c.key for c in diff(good, bad)] == [FLAG]
    assert good.extra["name"] == pair["good"] and bad.extra["name"] == pair["bad"]
    for name in ("good", "bad"):
        assert stat.S_IMODE(Path(files[name]).stat().st_mode) == 0o600
    assert json.loads(Path(files["result"]).read_text()) == result
    assert load_priors(files["result"]).rank(FLAG) == 1


def test_secrets_are_redacted_in_suspects_and_scrubbed_from_failures(tmp_path: Path) -> None:
    token = "hf_s3cr3tvalue42"
    result = triage(TriageRequest([secret_fleet(tmp_path / "f.json", token)]))
    document = json.dumps(result.to_dict())
    shown = render_text(result)
    assert token not in document and token not in shown
    assert "hf_oldvalue000" not in document
    top = result.to_dict()["suspects"][0]
    assert (top["key"], top["value"]) == (TRAINER + "env.HF_TOKEN", REDACTED)
    assert REDACTED in result.signatures[0].sample


def test_nothing_to_explain_without_failures(fleet_file: Callable[..., str]) -> None:
    rows = [({"FLAG": "on"}, "succeeded")] * 3 + [({"FLAG": "off"}, "running")]
    result = triage(TriageRequest([fleet_file(rows)]))
    assert result.status == "nothing_to_explain"
    assert (result.jobs, result.succeeded, result.running) == (4, 3, 1)
    assert result.suspects == [] and result.pair is None
    assert "none of the 4 jobs failed" in result.message
    assert "Nothing to explain" in render_text(result)


def test_without_a_success_there_is_nothing_to_compare(fleet_file: Callable[..., str]) -> None:
    path = fleet_file([({"FLAG": "on"}, "failed")] * 3 + [({"FLAG": "on"}, "running")])
    with pytest.raises(InputError) as caught:
        triage(TriageRequest([path]))
    assert caught.value.message.startswith(f"{path}: no succeeded job to compare")
    assert "3 failed, 1 running" in caught.value.message


def test_objects_of_other_kinds_are_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n"
    )
    with pytest.raises(
        InputError, match=r"cm\.yaml: no jobs found \(only 1 ConfigMap, 1 Service\)"
    ):
        triage(TriageRequest([str(path)]))
    with pytest.raises(InputError, match="no jobs to triage"):
        triage(TriageRequest([]))


def test_since_keeps_recent_jobs_only(tmp_path: Path) -> None:
    old = job("old-1", "succeeded", created="2026-11-01T00:00:00Z")
    new = job("new-1", "failed", created="2026-11-20T00:00:00Z")
    path = export(tmp_path / "f.json", [old, new, failed_with(new)])
    now = 1795132800.0 + 3600  # 2026-11-20T01:00:00Z
    with pytest.raises(
        InputError, match=r"no succeeded job to compare the failures with \(1 failed\)"
    ):
        triage(TriageRequest([path], select=since("2h"), now=now))
    assert triage(TriageRequest([path], select=since("30d"), now=now)).jobs == 2
    with pytest.raises(InputError, match=r"no jobs created since the --since cutoff \(2 older"):
        triage(TriageRequest([path], select=since("60s"), now=now + 86400))
