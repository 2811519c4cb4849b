"""Throughput of the training data path: the sampler, the audio reads and decodes, the crops and the collation, with
no model. Reports cuts/s and audio seconds/s, in total and per DataLoader worker (the main process counts as one
worker when there are none).

    speechflow data-bench --data train_cuts.jsonl.gz --num-workers 2 --batches 200
    python -m training.trainers.data_bench --data shards/ --num-workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.audio import SAMPLE_RATE
from training.data.loading import CutBatchDataset, CutStream, make_loader, min_duration, sampler_config
from training.data.shar import is_shar

from .trainer import TrainConfig

WARMUP_BATCHES = 5  # worker start-up and the first shard's open are not steady-state throughput


def _dataset(task: str, data: str | os.PathLike, train: TrainConfig) -> CutBatchDataset:
    if task == "enhance":
        from training.tasks.enhance_separate import NoisyCropDataset

        return NoisyCropDataset(data, train.max_seconds, sample_rate=SAMPLE_RATE, seed=train.seed)
    if task == "separate":
        from training.tasks.enhance_separate import MixtureDataset

        return MixtureDataset(train.max_seconds, SAMPLE_RATE, seed=train.seed)
    return CutBatchDataset(train.max_seconds, SAMPLE_RATE, seed=train.seed)


def run_bench(data: str | os.PathLike, batches: int = 200, workers: int = 1, batch_seconds: float = 48.0,
              max_seconds: float = 3.0, task: str = "pretrain", seed: int = 0) -> dict[str, Any]:
    """Time ``batches`` batches of the task's training data after a short warm-up -> the figures as a dict."""
    train = TrainConfig(batch_seconds=batch_seconds, max_seconds=max_seconds, seed=seed, num_workers=workers)
    stream = CutStream(data, sampler_config(train), keep=min_duration(0.1))
    loader = make_loader(_dataset(task, data, train), stream.keys(), workers)
    cuts = samples = 0
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        if i == WARMUP_BATCHES:
            cuts = samples = 0
            start = time.perf_counter()
        lengths = batch.tensors["lengths"]
        cuts += len(lengths)
        samples += int(lengths.sum())
        if i + 1 >= WARMUP_BATCHES + batches:
            break
    seconds = time.perf_counter() - start
    audio_s = samples / SAMPLE_RATE
    per = max(workers, 1)
    return {"data": str(data), "format": "shar" if is_shar(data) else "manifest", "task": task, "workers": workers,
            "batches": batches, "batch_seconds": batch_seconds, "max_seconds": max_seconds,
            "wall_s": round(seconds, 3), "cuts_per_s": round(cuts / seconds, 1),
            "audio_s_per_s": round(audio_s / seconds, 1), "cuts_per_s_per_worker": round(cuts / seconds / per, 1),
            "audio_s_per_s_per_worker": round(audio_s / seconds / per, 1), "cpu_count": os.cpu_count()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.trainers.data_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--task", default="pretrain", choices=["pretrain", "enhance", "separate"])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--batch-seconds", type=float, default=48.0)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(json.dumps(run_bench(args.data, args.batches, args.num_workers, args.batch_seconds, args.max_seconds,
                               args.task), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
