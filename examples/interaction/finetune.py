#!/usr/bin/env python3
"""A review-sentiment fine-tune whose model loading follows Hugging Face's cache rules.

Standard library only. The job resolves its model (config and tokenizer files) the way
``huggingface_hub`` does:

* look in ``$HF_HOME/hub/models--<org>--<name>/snapshots/<revision>/``;
* on a miss, download the files into that cache -- unless ``HF_HUB_OFFLINE=1``, in
  which case the miss is fatal.

The pod's persistent volume is mounted at ``/cache`` and still holds what earlier runs
downloaded into ``/cache/huggingface``. So each change of the storage migration is
harmless alone: a new, empty ``HF_HOME`` just downloads again, and offline mode just
reads the warm cache. Together, the job looks in an empty cache and may not download.

"Downloading" copies the files from ``hub/`` beside this script, which stands in for
huggingface.co (nothing goes over the network). The container paths are mapped under
a temporary directory, so parallel runs never share files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("finetune")

HERE = Path(__file__).resolve().parent
HUB = HERE / "hub"  # stands in for https://huggingface.co
REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"
ENDPOINT = "https://huggingface.co"
MODEL_FILES = ("config.json", "tokenizer_config.json", "vocab.txt")
# What the persistent volume at /cache holds from earlier runs.
WARM_CACHES = ("/cache/huggingface",)


class LocalEntryNotFoundError(FileNotFoundError):
    """huggingface_hub's error for a cache miss when downloads are not allowed."""


class Sandbox:
    """Maps container paths under one private root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


def repo_folder(hf_home: Path, model: str) -> Path:
    return hf_home / "hub" / ("models--" + model.replace("/", "--"))


def download(model: str, hf_home: Path) -> Path:
    """Fetch the model files into the cache, in the hub's layout; return the snapshot."""
    folder = repo_folder(hf_home, model)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        log.info("Downloading %s/%s/resolve/main/%s", ENDPOINT, model, name)
        shutil.copyfile(HUB / model / name, snapshot / name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    return snapshot


def cached_snapshot(model: str, hf_home: Path) -> Path | None:
    folder = repo_folder(hf_home, model)
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = folder / "snapshots" / ref.read_text().strip()
    return snapshot if all((snapshot / f).is_file() for f in MODEL_FILES) else None


def snapshot_download(model: str, hf_home: Path, offline: bool) -> Path:
    """Resolve the model from the cache, downloading on a miss unless offline."""
    snapshot = cached_snapshot(model, hf_home)
    if snapshot is not None:
        log.info("%s: using cached snapshot %s", model, snapshot.name[:12])
        return snapshot
    if offline:
        raise LocalEntryNotFoundError(
            "Cannot find the requested files in the disk cache and outgoing traffic has been "
            "disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' "
            "to False."
        )
    return download(model, hf_home)


def load_tokenizer(model: str, hf_home: Path, offline: bool) -> dict[str, int]:
    try:
        snapshot = snapshot_download(model, hf_home, offline)
    except LocalEntryNotFoundError as err:
        raise OSError(
            f"We couldn't connect to '{ENDPOINT}' to load the files, and couldn't find them "
            f"in the cached files.\nCheck your internet connection or see how to run the "
            f"library in offline mode at "
            f"'{ENDPOINT}/docs/transformers/installation#offline-mode'."
        ) from err
    config = json.loads((snapshot / "config.json").read_text())
    tokens = (snapshot / "vocab.txt").read_text().split()
    if len(tokens) != config["vocab_size"]:
        raise ValueError(f"vocab.txt has {len(tokens)} tokens, config says {config['vocab_size']}")
    return {token: i for i, token in enumerate(tokens)}


POSITIVE = [
    "great",
    "good",
    "excellent",
    "perfect",
    "love",
    "works",
    "fast",
    "easy",
    "recommend",
    "happy",
    "quickly",
]
NEGATIVE = [
    "bad",
    "terrible",
    "poor",
    "broken",
    "slow",
    "late",
    "damaged",
    "hate",
    "refund",
    "never",
    "unhappy",
]
FILLER = [
    "the",
    "a",
    "phone",
    "laptop",
    "charger",
    "cable",
    "case",
    "battery",
    "screen",
    "arrived",
    "size",
    "color",
]


def make_corpus(rng: random.Random, n: int) -> list[tuple[str, int]]:
    corpus = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(POSITIVE if label else NEGATIVE, k=2) + rng.choices(FILLER, k=4)
        rng.shuffle(words)
        corpus.append((" ".join(words), label))
    return corpus


def encode(text: str, vocab: dict[str, int]) -> list[int]:
    unk = vocab["[UNK]"]
    return [vocab["[CLS]"], *(vocab.get(w, unk) for w in text.lower().split()), vocab["[SEP]"]]


def train(vocab: dict[str, int], data: list[tuple[list[int], int]], steps: int) -> float:
    """Bag-of-words logistic regression with SGD; returns the final accuracy."""
    weights = [0.0] * len(vocab)
    bias, lr = 0.0, 0.5
    rng = random.Random(7)

    def prob(ids: list[int]) -> float:
        z = bias + sum(weights[i] for i in ids)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    for step in range(1, steps + 1):
        batch = rng.sample(data, 16)
        loss = 0.0
        for ids, label in batch:
            p = prob(ids)
            loss -= math.log(max(p if label else 1.0 - p, 1e-12))
            for i in ids:
                weights[i] -= lr * (p - label) / len(batch)
            bias -= lr * (p - label) / len(batch)
        if step % 10 == 0:
            log.info("step %d/%d loss %.4f", step, steps, loss / len(batch))
    return sum((prob(ids) >= 0.5) == bool(label) for ids, label in data) / len(data)


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in {"DEBUG", "INFO", "WARNING", "ERROR"} else "INFO",
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    model = os.environ.get("MODEL_NAME", "bert-base-uncased")
    hf_home = os.environ.get("HF_HOME") or "/root/.cache/huggingface"
    offline = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}
    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or f"{hf_home}/datasets"
    log.debug(
        "hub: offline=%s etag timeout %ss, download timeout %ss, telemetry %s",
        offline,
        os.environ.get("HF_HUB_ETAG_TIMEOUT", "10"),
        os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT", "10"),
        "off" if os.environ.get("HF_HUB_DISABLE_TELEMETRY") else "on",
    )
    log.info(
        "threads %s, tokenizer parallelism %s, wandb %s",
        os.environ.get("OMP_NUM_THREADS", "auto"),
        os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        os.environ.get("WANDB_MODE", "online"),
    )
    with tempfile.TemporaryDirectory(prefix="finetune-fs-") as tmp:
        fs = Sandbox(Path(tmp))
        for warm in WARM_CACHES:  # what the persistent volume brings along
            download_quietly(model, fs.path(warm))
        vocab = load_tokenizer(model, fs.path(hf_home), offline)
        log.info("tokenizer: %d tokens", len(vocab))
        corpus = make_corpus(random.Random(11), 400)
        cache = fs.path(datasets_cache) / "reviews" / "train.jsonl"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in corpus))
        data = [(encode(t, vocab), y) for t, y in corpus]
        acc = train(vocab, data, steps=40)
    print(json.dumps({"event": "final_eval", "accuracy": round(acc, 4)}))
    return 0


def download_quietly(model: str, hf_home: Path) -> None:
    previous = log.level
    log.setLevel(logging.WARNING)
    try:
        download(model, hf_home)
    finally:
        log.setLevel(previous)


if __name__ == "__main__":
    sys.exit(main())
