"""The fleet generator of benchmarks/fleet.py, triaged end to end on small fleets.

The benchmark (benchmarks/bench_triage.py) measures the rates on many fleets; here a
few seeded fleets keep the generator and the analysis honest with each other.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet import FleetConfig, generate, write
from clusterbisect.diff import diff
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.oracle import SimOracle, found_exactly, simulate
from clusterbisect.specs import load_spec
from clusterbisect.triage import TriageOptions, TriageRequest, triage
from clusterbisect.triage.priors import load_priors


def run(
    tmp_path: Path, culprit: str, seed: int, fmt: str = "json"
) -> tuple[dict, list[str], list[str]]:
    objects, truth = generate(FleetConfig(jobs=400, seed=seed, culprit=culprit))
    path = tmp_path / f"fleet.{fmt}"
    write(path, objects, fmt)
    result = triage(TriageRequest([str(path)], TriageOptions(out=str(tmp_path / "out")))).to_dict()
    return result, truth.culprit_keys, truth.bundle_keys


def keys(suspect: dict) -> list[str]:
    return [suspect["key"], *suspect["bundle"]]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_single_culprit_is_ranked_first_and_in_the_pair(tmp_path: Path, seed: int) -> None:
    result, culprits, _ = run(tmp_path, "single", seed)
    assert result["suspects"][0]["key"] == culprits[0]
    assert result["status"] == "suspects_found"
    # The settings rolled out with it are explained away: one significant suspect.
    assert [s["key"] for s in result["suspects"] if s["significant"]] == culprits
    assert culprits[0] in result["pair"]["candidates"]
    good, bad = load_spec(result["files"]["good"]), load_spec(result["files"]["bad"])
    changed = [c.key for c in diff(good, bad)]
    assert culprits[0] in changed and len(changed) == result["pair"]["changes"]


def test_a_culprit_pair_is_in_the_top_three_and_interacts(tmp_path: Path) -> None:
    result, culprits, _ = run(tmp_path, "pair", 3)
    top3 = {k for s in result["suspects"][:3] for k in keys(s)}
    assert set(culprits) <= top3
    (interaction,) = result["interactions"]
    assert set(interaction["keys"]) == set(culprits)
    assert set(culprits) <= set(result["pair"]["candidates"])


def test_a_culprit_inside_the_image_bundle_ranks_the_bundle_first(tmp_path: Path) -> None:
    result, culprits, bundle = run(tmp_path, "bundle", 4, fmt="yaml")
    first = result["suspects"][0]
    assert culprits[0] in keys(first)
    assert sorted(keys(first)) == sorted(bundle)
    # No fleet can split the bundle; the pair holds all of it, and its bisection (the
    # project's, against a simulated workload that fails with the culprit) splits it,
    # with the ranking as priors or without.
    good, bad = load_spec(result["files"]["good"]), load_spec(result["files"]["bad"])
    changes = diff(good, bad)
    index = {c.key: i for i, c in enumerate(changes)}
    assert set(bundle) <= set(index)
    culprit = frozenset({index[culprits[0]]})
    priors = load_priors(result["files"]["result"])
    weights = [priors.weight(c.key) for c in changes]
    for strategy in (BisectionStrategy(), BisectionStrategy(weights=weights)):
        searched = simulate(strategy, len(changes), SimOracle([culprit]))
        assert found_exactly(searched.result, [culprit])


def test_without_a_culprit_nothing_is_significant(tmp_path: Path) -> None:
    result, _, _ = run(tmp_path, "none", 5)
    # Only background failures: each signature is small, and none goes with a setting.
    assert result["status"] == "no_significant_suspect"
