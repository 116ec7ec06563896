"""Real wheels for pip freeze tests, written offline: a tiny index of packages whose
versions behave differently, so a pin can be the culprit.

A wheel is a zip with the package's module, ``METADATA``, ``WHEEL`` and a ``RECORD``
of sha256 hashes (PEP 427): pip and uv install it like any other.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

# The incident: checkpoint_io 2.0 refuses the job's checkpoints (weights only); every
# other package is harmless in either version.
LOADER_OK = "def load():\n    return 'loaded'\n"
LOADER_BAD = (
    "def load():\n"
    "    raise RuntimeError('Weights only load failed: checkpoint_io 2.0 refuses pickles')\n"
)
PACKAGES = {
    ("checkpoint-io", "1.0"): LOADER_OK,
    ("checkpoint-io", "2.0"): LOADER_BAD,
    ("tqdm-lite", "1.0"): "VERSION = '1.0'\n",
    ("tqdm-lite", "1.1"): "VERSION = '1.1'\n",
    ("yaml-lite", "3.0"): "VERSION = '3.0'\n",
    ("yaml-lite", "3.1"): "VERSION = '3.1'\n",
    ("otel-lite", "0.9"): "VERSION = '0.9'\n",
}

# The workload: import every package, then load a checkpoint.
WORKLOAD = (
    "import checkpoint_io, tqdm_lite, yaml_lite\n"
    "print('versions', tqdm_lite.VERSION, yaml_lite.VERSION)\n"
    "print(checkpoint_io.load())\n"
)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """Write ``name-version-py3-none-any.whl`` holding module ``name`` (dashes as
    underscores) with ``source``; its path."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: clusterbisect-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name_in_zip, data in files.items():
            wheel.writestr(name_in_zip, data)
    return path


def build_index(folder: Path) -> Path:
    """Every package of :data:`PACKAGES` as a wheel in ``folder`` (a --find-links dir)."""
    for (name, version), source in PACKAGES.items():
        build_wheel(folder, name, version, source)
    return folder


def freeze_pair(folder: Path, find_links: str) -> tuple[Path, Path]:
    """``good.txt`` and ``bad.txt``, pip freeze files that install from ``find_links``
    only: checkpoint-io 1.0 -> 2.0 (the culprit), two other upgrades, one addition."""
    header = f"--no-index\n--find-links {find_links}\n"
    good = folder / "good.txt"
    bad = folder / "bad.txt"
    good.write_text(header + "checkpoint-io==1.0\ntqdm-lite==1.0\nyaml-lite==3.0\n")
    bad.write_text(header + "checkpoint-io==2.0\ntqdm-lite==1.1\nyaml-lite==3.1\notel-lite==0.9\n")
    (folder / "work.py").write_text(WORKLOAD)
    return good, bad
