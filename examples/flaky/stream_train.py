#!/usr/bin/env python3
"""A streaming training job whose data loader sometimes times out.

Standard library only. A background worker reads feature shards from object storage
into a bounded prefetch queue; the training loop takes shards from the queue with the
data loader's timeout, as PyTorch's DataLoader does: ``DATALOADER_TIMEOUT=0`` waits
forever, a positive value raises ``RuntimeError: DataLoader timed out after N seconds``
when a shard takes longer than that to arrive.

Shard reads have a heavy-tailed latency (log-normal, median 7.5 s, like a busy object
store). With a 30-second timeout, about one run in two meets a shard slow enough to
crash it; without a timeout, runs never fail. Nothing goes over the network: each read
sleeps for its latency, with time scaled 500x (one simulated second is two real
milliseconds), so a run takes a fraction of a second.

The random seed comes from the clock and the process id, so every run differs; set
``SHARD_LATENCY_SEED`` to replay one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import sys
import threading
import time

log = logging.getLogger("stream_train")

SECOND = 0.002  # one simulated second, in real seconds
MEDIAN_LATENCY_S = 7.5
LATENCY_SIGMA = 1.0
N_SHARDS = 8
ROWS_PER_SHARD = 64


class ShardLoader:
    """Prefetches shards in a worker thread; ``timeout`` (simulated seconds) bounds each wait."""

    def __init__(self, shards: list[str], timeout: float, prefetch: int, rng: random.Random):
        self.shards = shards
        self.timeout = timeout
        self.rng = rng
        self.queue: queue.Queue[tuple[str, list[tuple[list[float], float]]]] = queue.Queue(
            maxsize=max(1, prefetch)
        )
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._read_all, name="loader-worker", daemon=True)

    def _read_all(self) -> None:
        for shard in self.shards:
            latency = self.rng.lognormvariate(math.log(MEDIAN_LATENCY_S), LATENCY_SIGMA)
            if self.stop.wait(latency * SECOND):
                return
            rows = [self._row() for _ in range(ROWS_PER_SHARD)]
            log.debug("read %s in %.1fs", shard, latency)
            while not self.stop.is_set():
                try:
                    self.queue.put((shard, rows), timeout=0.05)
                    break
                except queue.Full:
                    continue

    def _row(self) -> tuple[list[float], float]:
        x = [self.rng.uniform(-1.0, 1.0) for _ in range(4)]
        return x, 0.7 * x[0] - 0.3 * x[1] + 0.1 * x[2] + 0.05 * self.rng.gauss(0.0, 1.0)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.worker.start()
        try:
            for _ in self.shards:
                yield self._get()
        finally:
            self.stop.set()

    def _get(self) -> tuple[str, list[tuple[list[float], float]]]:
        wait = self.timeout * SECOND if self.timeout > 0 else None
        try:
            return self.queue.get(timeout=wait)
        except queue.Empty as err:
            raise RuntimeError(f"DataLoader timed out after {self.timeout:g} seconds") from err


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in {"DEBUG", "INFO", "WARNING", "ERROR"} else "INFO",
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    seed = int(os.environ.get("SHARD_LATENCY_SEED") or (time.time_ns() ^ (os.getpid() << 16)))
    timeout = float(os.environ.get("DATALOADER_TIMEOUT") or 0)
    prefetch = int(os.environ.get("DATALOADER_PREFETCH_FACTOR") or 2)
    pattern = os.environ.get("TRAIN_SHARDS", "s3://features/part-*.parquet")
    log.info(
        "storage %s (retries: %s, mode %s), threads %s",
        os.environ.get("S3_ENDPOINT_URL", "default"),
        os.environ.get("AWS_MAX_ATTEMPTS", "3"),
        os.environ.get("AWS_RETRY_MODE", "legacy"),
        os.environ.get("OMP_NUM_THREADS", "auto"),
    )
    log.info("loader: timeout %gs, prefetch %d, seed %d", timeout, prefetch, seed)
    shards = [pattern.replace("*", f"{i:05d}") for i in range(N_SHARDS)]
    loader = ShardLoader(shards, timeout, prefetch, random.Random(seed))

    weights, lr, loss = [0.0] * 4, 0.1, 0.0
    for step, (shard, rows) in enumerate(loader, start=1):
        loss = 0.0
        for x, y in rows:
            err = sum(w * v for w, v in zip(weights, x, strict=False)) - y
            loss += err * err / len(rows)
            weights = [w - lr * 2 * err * v / len(rows) for w, v in zip(weights, x, strict=False)]
        log.info("step %d/%d  %s  mse %.4f", step, N_SHARDS, shard.rsplit("/", 1)[-1], loss)
    print(json.dumps({"event": "epoch_done", "mse": round(loss, 5), "shards": N_SHARDS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
