"""Live tests must not be skipped where they are required (`make live`, `make test`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
