#!/usr/bin/env python3
"""Probe: does a tiny training loop run, converge and checkpoint in this environment?

A two-layer perceptron (8 inputs, 8 tanh hidden units, 1 sigmoid output) learns a
synthetic binary task with mini-batch SGD. The probe checks what a real training job
needs from its environment: the loop runs, the loss stays finite and goes down, and,
with ``--checkpoint-dir``, a checkpoint can be written there and read back intact
(for example ``--checkpoint-dir "$TORCH_HOME"`` to test a cache volume).

Usage:
    python train_loop.py [--steps 200] [--min-improvement 0.3] [--checkpoint-dir DIR]

Prints one JSON line: ``{"probe": "train_loop", "verdict": "pass"|"fail", ...}``.
Exit code: 0 on pass, 1 on failure, 2 on bad usage. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import random
import sys
import tempfile
import time
from typing import Any

PROBE = "train_loop"
N_IN, N_HIDDEN = 8, 8


def emit(verdict: str, code: int, **fields: Any) -> int:
    """Print the one JSON verdict line and return the exit code."""
    print(json.dumps({"probe": PROBE, "verdict": verdict, **fields}, sort_keys=True), flush=True)
    return code


def make_data(rng: random.Random, n: int) -> list[tuple[list[float], int]]:
    """Points labelled by a fixed non-linear rule the network can learn."""
    data = []
    for _ in range(n):
        x = [rng.uniform(-1.0, 1.0) for _ in range(N_IN)]
        data.append((x, int(x[0] * x[1] + 0.5 * x[2] - 0.3 * x[3] > 0)))
    return data


class MLP:
    def __init__(self, rng: random.Random) -> None:
        scale = 1.0 / math.sqrt(N_IN)
        self.w1 = [[rng.gauss(0.0, scale) for _ in range(N_IN)] for _ in range(N_HIDDEN)]
        self.b1 = [0.0] * N_HIDDEN
        self.w2 = [rng.gauss(0.0, 1.0 / math.sqrt(N_HIDDEN)) for _ in range(N_HIDDEN)]
        self.b2 = 0.0

    def forward(self, x: list[float]) -> tuple[list[float], float]:
        hidden = [
            math.tanh(sum(w * v for w, v in zip(row, x)) + b) for row, b in zip(self.w1, self.b1)
        ]
        z = sum(w * h for w, h in zip(self.w2, hidden)) + self.b2
        return hidden, 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def loss(self, data: list[tuple[list[float], int]]) -> float:
        total = 0.0
        for x, y in data:
            p = self.forward(x)[1]
            total -= math.log(max(p if y else 1.0 - p, 1e-12))
        return total / len(data)

    def sgd_step(self, batch: list[tuple[list[float], int]], lr: float) -> None:
        g_w1 = [[0.0] * N_IN for _ in range(N_HIDDEN)]
        g_b1 = [0.0] * N_HIDDEN
        g_w2 = [0.0] * N_HIDDEN
        g_b2 = 0.0
        for x, y in batch:
            hidden, p = self.forward(x)
            d_out = p - y  # d(BCE)/dz for a sigmoid output
            g_b2 += d_out
            for j, h in enumerate(hidden):
                g_w2[j] += d_out * h
                d_hidden = d_out * self.w2[j] * (1.0 - h * h)
                g_b1[j] += d_hidden
                for i, v in enumerate(x):
                    g_w1[j][i] += d_hidden * v
        scale = lr / len(batch)
        for j in range(N_HIDDEN):
            self.w2[j] -= scale * g_w2[j]
            self.b1[j] -= scale * g_b1[j]
            for i in range(N_IN):
                self.w1[j][i] -= scale * g_w1[j][i]
        self.b2 -= scale * g_b2

    def state(self) -> dict[str, Any]:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}


def checkpoint_roundtrip(model: MLP, directory: str) -> dict[str, Any]:
    """Write the model state under ``directory`` and read it back."""
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="probe-ckpt-", suffix=".pkl", dir=directory)
    try:
        state = model.state()
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        with open(path, "rb") as fh:
            loaded = pickle.load(fh)
        return {"path": directory, "bytes": os.path.getsize(path), "intact": loaded == state}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a tiny training loop; one JSON line.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-improvement",
        type=float,
        default=0.3,
        help="the final loss must be at most (1 - this) times the initial loss",
    )
    parser.add_argument("--checkpoint-dir", help="also write and read back a checkpoint here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or not 0.0 <= args.min_improvement < 1.0:
        return emit(
            "error", 2, error="--steps and --batch-size must be >= 1, --min-improvement in [0, 1)"
        )

    started = time.perf_counter()
    rng = random.Random(args.seed)
    train, held_out = make_data(rng, 512), make_data(rng, 128)
    model = MLP(rng)
    initial = model.loss(held_out)
    for _ in range(args.steps):
        model.sgd_step(rng.sample(train, args.batch_size), args.lr)
    final = model.loss(held_out)
    accuracy = sum((model.forward(x)[1] >= 0.5) == bool(y) for x, y in held_out) / len(held_out)
    fields: dict[str, Any] = {
        "steps": args.steps,
        "initial_loss": round(initial, 5),
        "final_loss": round(final, 5) if math.isfinite(final) else str(final),
        "accuracy": round(accuracy, 4),
    }
    problems = []
    if not math.isfinite(final):
        problems.append("the loss is not finite")
    elif final > initial * (1.0 - args.min_improvement):
        problems.append(
            f"the loss went from {initial:.4f} to {final:.4f}, "
            f"less than the required {args.min_improvement:.0%} improvement"
        )
    if args.checkpoint_dir:
        try:
            fields["checkpoint"] = checkpoint_roundtrip(model, args.checkpoint_dir)
            if not fields["checkpoint"]["intact"]:
                problems.append("the checkpoint read back differs from the one written")
        except OSError as err:
            problems.append(f"checkpoint in {args.checkpoint_dir}: {type(err).__name__}: {err}")
    fields["seconds"] = round(time.perf_counter() - started, 3)
    if problems:
        return emit("fail", 1, error="; ".join(problems), **fields)
    return emit("pass", 0, **fields)


if __name__ == "__main__":
    sys.exit(main())
