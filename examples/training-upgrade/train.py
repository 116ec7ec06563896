#!/usr/bin/env python3
"""The nightly fine-tuning job of the training-upgrade incident, in miniature.

Standard library only, so it runs anywhere in well under a second. It does what the
real job does, step for step:

* reads its configuration from the environment, like the real job: thread counts
  (OMP_/MKL_), NCCL_/TORCH_ settings, cache paths (HF_HOME, TORCH_HOME,
  XDG_CACHE_HOME, ...), logging (LOG_LEVEL, LOG_FORMAT), data loader workers;
* prepares a dataset (a synthetic query/document relevance task) and caches it under
  HF_DATASETS_CACHE;
* trains a logistic-regression relevance model with mini-batch SGD and momentum;
* saves a checkpoint every SAVE_STEPS steps under CHECKPOINT_DIR: the weights, the
  optimizer state and a ``TrainState`` record, pickled the way ``torch.save`` does;
* at the end reloads the best checkpoint for the final evaluation (what
  ``load_best_model_at_end`` does in the Hugging Face Trainer).

The checkpoint loader follows ``torch.load``: ``weights_only`` defaults to False, and
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` forces the restricted unpickler, which refuses any
class that is not allowlisted -- such as ``TrainState``. The upgraded base image sets
that variable as a security hardening, and the job dies at its very last step.

The container paths in the settings (/cache/..., /checkpoints/...) are mapped under a
temporary directory (or $TRAIN_FS_ROOT), so the job touches nothing else on the
machine and parallel runs never share files.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

TRUTHY = {"1", "true", "yes", "on"}
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


# --- configuration ------------------------------------------------------------------


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer setting; a malformed value falls back to the default with a warning."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", name, raw, default)
        return default
    return max(minimum, value)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUTHY


@dataclasses.dataclass
class Config:
    """Everything the job reads from its environment and arguments."""

    model: str
    dataset: str
    checkpoint_dir: str
    cache_home: str
    hf_home: str
    datasets_cache: str
    torch_home: str
    max_steps: int
    batch_size: int
    learning_rate: float
    save_steps: int
    num_workers: int
    intra_op_threads: int
    seed: int

    @classmethod
    def from_env(cls, args: argparse.Namespace) -> Config:
        cache_home = os.environ.get("XDG_CACHE_HOME") or "/root/.cache"
        hf_home = os.environ.get("HF_HOME") or f"{cache_home}/huggingface"
        return cls(
            model=args.model,
            dataset=args.dataset,
            checkpoint_dir=args.output_dir or os.environ.get("CHECKPOINT_DIR") or "/checkpoints",
            cache_home=cache_home,
            hf_home=hf_home,
            datasets_cache=os.environ.get("HF_DATASETS_CACHE") or f"{hf_home}/datasets",
            torch_home=os.environ.get("TORCH_HOME") or f"{cache_home}/torch",
            max_steps=env_int("MAX_STEPS", 60, minimum=1),
            batch_size=env_int("TRAIN_BATCH_SIZE", 32, minimum=1),
            learning_rate=float(os.environ.get("LEARNING_RATE") or 0.5),
            save_steps=env_int("SAVE_STEPS", 20, minimum=1),
            num_workers=env_int("DATALOADER_NUM_WORKERS", 2),
            intra_op_threads=env_int("OMP_NUM_THREADS", os.cpu_count() or 1, minimum=1),
            seed=env_int("SEED", 1234),
        )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def setup_logging() -> None:
    """LOG_LEVEL and LOG_FORMAT (text|json); an unknown level falls back to INFO."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stdout)
    if os.environ.get("LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level if level in LOG_LEVELS else "INFO", handlers=[handler])
    if level not in LOG_LEVELS:
        log.warning("unknown LOG_LEVEL %r; using INFO", level)
    verbosity = os.environ.get("TRANSFORMERS_VERBOSITY", "warning").lower()
    if verbosity.upper() not in LOG_LEVELS:
        log.warning("unknown TRANSFORMERS_VERBOSITY %r; using warning", verbosity)
        verbosity = "warning"
    logging.getLogger("transformers").setLevel(verbosity.upper())


def describe_runtime(cfg: Config) -> None:
    """Log the runtime settings the way the real job's start-up banner does."""
    mkl = env_int("MKL_NUM_THREADS", cfg.intra_op_threads, minimum=1)
    bind = os.environ.get("OMP_PROC_BIND") or os.environ.get("KMP_AFFINITY") or "unset"
    log.info(
        "runtime: python %s, intra-op threads %d (MKL %d), affinity %s",
        sys.version.split()[0],
        cfg.intra_op_threads,
        mkl,
        bind,
    )
    # A single-process job never opens a communicator; the settings are only logged.
    world = env_int("WORLD_SIZE", 1, minimum=1)
    comm = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("NCCL_", "TORCH_NCCL_"))}
    log.info("distributed: world size %d, port %s", world, os.environ.get("MASTER_PORT", "29500"))
    log.debug("communicator settings (unused at world size 1): %s", comm)
    debug = os.environ.get("TORCH_DISTRIBUTED_DEBUG", "OFF").upper()
    if debug not in {"OFF", "INFO", "DETAIL"}:
        log.warning("TORCH_DISTRIBUTED_DEBUG=%r is not OFF, INFO or DETAIL", debug)
    alloc = parse_alloc_conf(os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
    log.debug("no CUDA device: allocator options %s not used", alloc or "{}")
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        if os.environ.get(name):
            log.debug("%s=%s (no compiled kernels in eager mode)", name, os.environ[name])
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        service = os.environ.get("OTEL_SERVICE_NAME", "unknown_service")
        log.info("tracing: service %s -> %s (spans buffered, exported at exit)", service, endpoint)


def parse_alloc_conf(raw: str) -> dict[str, str]:
    """``key:value,key:value`` as PyTorch's caching allocator reads it."""
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition(":")
        if not sep:
            log.warning("PYTORCH_CUDA_ALLOC_CONF: ignoring malformed option %r", item)
            continue
        options[key] = value
    return options


# --- the container filesystem -------------------------------------------------------


class Sandbox:
    """Maps container paths (``/cache/torch``) under one private root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


# --- checkpoint serialization, with torch.load's weights_only semantics -------------


class WeightsUnpickler(pickle.Unpickler):
    """Loads only plain data; refuses every global that is not allowlisted."""

    SAFE_GLOBALS = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Unsupported global: GLOBAL {module}.{name} was not an allowed global by "
            f"default. Please use `torch.serialization.add_safe_globals([{name}])` or the "
            f"`torch.serialization.safe_globals([{name}])` context manager to allowlist "
            "this global if you trust this class/function."
        )


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_checkpoint(path: Path, weights_only: bool | None = None) -> dict[str, Any]:
    """Like ``torch.load``: the env var forces the restricted unpickler."""
    if env_flag("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        weights_only = True
    data = path.read_bytes()
    if not weights_only:
        return pickle.loads(data)
    try:
        return WeightsUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            "Weights only load failed. This file can still be loaded, to do so you have two "
            "options, do those steps only if you trust the source of the checkpoint. \n\t"
            "(1) `TORCH_FORCE_WEIGHTS_ONLY_LOAD` is set, so `torch.load` ran with "
            "`weights_only=True`. Re-running `torch.load` with `weights_only` set to `False` "
            "will likely succeed, but it can result in arbitrary code execution. Do it only "
            "if you got the file from a trusted source.\n\t(2) Alternatively, to load with "
            "`weights_only=True` please check the recommended steps in the following error "
            f"message.\n\tWeightsUnpickler error: {err}"
        ) from None


# --- data ---------------------------------------------------------------------------

N_FEATURES = 16


def prepare_dataset(cache_dir: Path, seed: int) -> tuple[list[list[float]], list[int]]:
    """A synthetic relevance dataset, built once and then read from the datasets cache."""
    cached = cache_dir / "relevance-v14" / "train.json"
    if cached.exists():
        blob = json.loads(cached.read_text())
        log.info("dataset: loaded %d examples from cache %s", len(blob["y"]), cached)
        return blob["x"], blob["y"]
    rng = random.Random(seed)
    true_w = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
    xs, ys = [], []
    for _ in range(1024):
        x = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
        margin = sum(w * v for w, v in zip(true_w, x, strict=False)) + rng.gauss(0.0, 0.5)
        xs.append(x)
        ys.append(1 if margin > 0 else 0)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"x": xs, "y": ys}))
    log.info("dataset: generated %d examples, cached at %s", len(ys), cached)
    return xs, ys


class DataLoader:
    """Shuffled mini-batches, with a prefetch queue sized by the worker count."""

    def __init__(
        self, xs: list[list[float]], ys: list[int], batch_size: int, workers: int, seed: int
    ):
        self.xs, self.ys = xs, ys
        self.batch_size = batch_size
        self.prefetch = max(1, workers) * 2
        self.rng = random.Random(seed)

    def __iter__(self) -> Iterator[tuple[list[list[float]], list[int]]]:
        queue: deque[tuple[list[list[float]], list[int]]] = deque()
        while True:
            order = list(range(len(self.ys)))
            self.rng.shuffle(order)
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                idx = order[start : start + self.batch_size]
                queue.append(([self.xs[i] for i in idx], [self.ys[i] for i in idx]))
                if len(queue) >= self.prefetch:
                    yield queue.popleft()


# --- model --------------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    """Saved with every checkpoint, like the Trainer's trainer_state.json."""

    global_step: int
    epoch: float
    best_metric: float
    best_checkpoint: str | None
    log_history: list[dict[str, float]]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


class RelevanceModel:
    def __init__(self) -> None:
        self.weight = [0.0] * N_FEATURES
        self.bias = 0.0

    def predict(self, x: list[float]) -> float:
        return sigmoid(sum(w * v for w, v in zip(self.weight, x, strict=False)) + self.bias)

    def state_dict(self) -> dict[str, Any]:
        return {"weight": list(self.weight), "bias": self.bias}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = list(state["weight"])
        self.bias = float(state["bias"])


class SGD:
    def __init__(self, model: RelevanceModel, lr: float, momentum: float = 0.9) -> None:
        self.model, self.lr, self.momentum = model, lr, momentum
        self.velocity = [0.0] * (N_FEATURES + 1)

    def step(self, xs: list[list[float]], ys: list[int]) -> float:
        """One step of binary cross-entropy; returns the batch loss."""
        grad = [0.0] * (N_FEATURES + 1)
        loss = 0.0
        for x, y in zip(xs, ys, strict=False):
            p = self.model.predict(x)
            loss -= math.log(max(p, 1e-12)) if y else math.log(max(1.0 - p, 1e-12))
            for j, v in enumerate(x):
                grad[j] += (p - y) * v
            grad[-1] += p - y
        n = len(ys)
        for j, g in enumerate(grad):
            self.velocity[j] = self.momentum * self.velocity[j] + g / n
        for j in range(N_FEATURES):
            self.model.weight[j] -= self.lr * self.velocity[j]
        self.model.bias -= self.lr * self.velocity[-1]
        return loss / n

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "velocity": list(self.velocity)}


def accuracy(model: RelevanceModel, xs: list[list[float]], ys: list[int]) -> float:
    hits = sum((model.predict(x) >= 0.5) == bool(y) for x, y in zip(xs, ys, strict=False))
    return hits / len(ys)


# --- the job ------------------------------------------------------------------------


def train(cfg: Config, fs: Sandbox) -> float:
    for cache in (cfg.cache_home, cfg.hf_home, cfg.torch_home):
        fs.path(cache).mkdir(parents=True, exist_ok=True)
    xs, ys = prepare_dataset(fs.path(cfg.datasets_cache), cfg.seed)
    split = len(ys) * 3 // 4
    train_x, train_y, eval_x, eval_y = xs[:split], ys[:split], xs[split:], ys[split:]
    loader = DataLoader(train_x, train_y, cfg.batch_size, cfg.num_workers, cfg.seed)
    model = RelevanceModel()
    optimizer = SGD(model, cfg.learning_rate)
    state = TrainState(0, 0.0, -1.0, None, [])
    log.info(
        "training %s on %s: %d steps, batch %d, lr %g, %d loader workers",
        cfg.model,
        cfg.dataset,
        cfg.max_steps,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.num_workers,
    )
    started = time.perf_counter()
    for step, (bx, by) in enumerate(loader, start=1):
        loss = optimizer.step(bx, by)
        state.global_step = step
        state.epoch = step * cfg.batch_size / len(train_y)
        if step % 10 == 0:
            log.info("step %d/%d  loss %.4f  epoch %.2f", step, cfg.max_steps, loss, state.epoch)
        if step % cfg.save_steps == 0 or step == cfg.max_steps:
            acc = accuracy(model, eval_x, eval_y)
            state.log_history.append({"step": step, "loss": loss, "eval_accuracy": acc})
            ckpt = fs.path(cfg.checkpoint_dir) / f"checkpoint-{step}" / "training_state.pt"
            if acc > state.best_metric:
                state.best_metric, state.best_checkpoint = acc, str(ckpt)
            save_checkpoint(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state},
                ckpt,
            )
            log.info("step %d: eval accuracy %.3f, saved %s", step, acc, ckpt.parent.name)
        if step >= cfg.max_steps:
            break
    elapsed = time.perf_counter() - started
    log.info("training done: %d steps in %.2fs", state.global_step, elapsed)

    # load_best_model_at_end: the final evaluation uses the best checkpoint.
    assert state.best_checkpoint is not None
    best = Path(state.best_checkpoint)
    log.info("loading best model from %s (accuracy %.3f)", best.parent.name, state.best_metric)
    checkpoint = load_checkpoint(best)
    model.load_state_dict(checkpoint["model"])
    final = accuracy(model, eval_x, eval_y)
    print(json.dumps({"event": "final_eval", "eval_accuracy": round(final, 4), "steps": step}))
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--dataset", default="/data/relevance/v14")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    setup_logging()
    cfg = Config.from_env(args)
    describe_runtime(cfg)
    root = os.environ.get("TRAIN_FS_ROOT")
    tmp = None if root else tempfile.mkdtemp(prefix="train-fs-")
    try:
        train(cfg, Sandbox(Path(root or tmp or ".")))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
