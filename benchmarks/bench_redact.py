"""How fast is scrubbing a probe's log of secrets, on ordinary and hostile text?

Every log excerpt, matched line and report passes through ``Redactor.text`` (the
session's known values, then the secret shapes of ``redact.SHAPES``). A regex that
backtracks turns a 1 MB line into minutes: an unbounded URL scheme once did. This
scrubs 1 MB of each kind of text (a plain long line, a long word, many JWT or PEM
starts without an end, many ``--token`` flags, a realistic log with secrets) and
reports MB/s; target: every kind at least 1 MB/s (exits 1 when one is slower).

    .venv/bin/python benchmarks/bench_redact.py [--mb 1]
"""

from __future__ import annotations

import argparse
import sys
import time

from clusterbisect.redact import Redactor

TARGET_MB_S = 1.0

UNITS = {
    "plain line": "x",
    "long word with dashes": "ab-",
    "JWT starts": "eyJ",
    "PEM headers without END": "-----BEGIN RSA PRIVATE KEY-----\n",
    "URL schemes without @": "a://b:",
    "--token flags": "--token ",
    "AWS key prefixes": "AKIA",
    "log with secrets": (
        "step 12 loss 0.31 url=postgres://app:pw-0ne-2@db/x token=hf_"
        + "Ab" * 17
        + " Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln\n"
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="size of each text, in MB")
    args = parser.parse_args(argv)
    size = int(args.mb * 1_000_000)
    redactor = Redactor(
        [("HF_TOKEN", "hf_" + "Ab" * 17), ("DATABASE_URL", "postgres://app:pw-0ne-2@db/x")]
    )
    print(f"| text ({args.mb:g} MB) | seconds | MB/s |")
    print("|---|---:|---:|")
    slow = []
    for name, unit in UNITS.items():
        text = unit * (size // len(unit))
        start = time.perf_counter()
        redactor.text(text)
        seconds = time.perf_counter() - start
        rate = args.mb / seconds if seconds else float("inf")
        print(f"| {name} | {seconds:.3f} | {rate:.1f} |")
        if rate < TARGET_MB_S:
            slow.append(name)
    if slow:
        print(f"\nbelow {TARGET_MB_S} MB/s: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
