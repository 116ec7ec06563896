"""The structure docs/architecture.md describes, checked on the source.

A ``run`` goes CLI -> session -> engine <-> runner -> report: so no runner reaches back
into the session, the engine or what drives it; the report is built from data and
imports neither the engine nor the session; the pure core does no I/O of ours. Every
import is counted, also those inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "clusterbisect"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The clusterbisect modules ``name`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES}


def under(prefix: str) -> list[str]:
    return [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]


def reaches(names: list[str], forbidden: list[str]) -> list[tuple[str, str]]:
    bad = set()
    for name in forbidden:
        bad.update(under(name))
    return sorted((m, i) for m in names for i in imports(m) & bad)


DRIVERS = [
    "clusterbisect.session",
    "clusterbisect.engine",
    "clusterbisect.workflow",
    "clusterbisect.stepmode",
    "clusterbisect.report",
    "clusterbisect.cli",
    "clusterbisect.agent",
]


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        # Runners are handed a RunnerContext: they never open the session themselves.
        (under("clusterbisect.runners"), DRIVERS),
        # The report takes data (Evidence).
        (["clusterbisect.report"], ["clusterbisect.engine", *DRIVERS[:1], *DRIVERS[2:4]]),
        # The engine drives a runner; it knows nothing of who drives it.
        (["clusterbisect.engine"], DRIVERS[2:]),
        # The session is the state directory: no engine, runner or report in it.
        (["clusterbisect.session"], [*DRIVERS[1:], "clusterbisect.runners"]),
        # The pure core: specs, settings, diff, search, options, redaction.
        (
            [
                *under("clusterbisect.search"),
                "clusterbisect.settings",
                "clusterbisect.diff",
                "clusterbisect.options",
                "clusterbisect.redact",
                "clusterbisect.problem",
                "clusterbisect.journal",
            ],
            [*DRIVERS, "clusterbisect.runners", "clusterbisect.backends"],
        ),
    ],
    ids=["runners", "report", "engine", "session", "core"],
)
def test_imports_follow_the_flow_of_a_run(modules: list[str], forbidden: list[str]) -> None:
    assert reaches(modules, forbidden) == []


def test_no_module_is_over_600_lines_unless_its_docstring_says_why() -> None:
    long = []
    for name, path in MODULES.items():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and f"{MAX_LINES} lines" not in docstring:
            long.append(f"{name}: {lines} lines")
    assert long == []


def test_no_backend_name_is_tested_outside_the_registry_and_the_backends() -> None:
    """Capabilities, not names: a backend's name appears as a string only where it is
    defined (backends.py) and in its own package."""
    allowed = {"clusterbisect.backends", *under("clusterbisect.runners")}
    found = []
    for name in MODULES:
        if name in allowed:
            continue
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                texts = {v.value for v in values if isinstance(v, ast.Constant)}
                if texts & {"local", "ray", "kubernetes"}:
                    found.append(f"{name}:{node.lineno}")
    assert found == []


def test_cli_start_up_imports_neither_ray_nor_kubernetes() -> None:
    code = (
        "import sys\n"
        "from clusterbisect.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'kubernetes'})\n"
        "print(', '.join(heavy), file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
