"""Random crops of manifest audio, batched under a frame budget, in a deterministic and resumable order."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from model.audio import prepare_waveform
from model.errors import AudioError
from model.packing import pack

from .manifest import Utterance

CropKey = tuple[int, int]  # (utterance index, crop seed)


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from integers (stable across runs and platforms, unlike ``hash``)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def read_crop(
    path: str | os.PathLike, max_seconds: float, seed: int, sample_rate: int, start_s: float | None = None
) -> tuple[np.ndarray, float]:
    """A random crop of at most ``max_seconds`` (or the one at ``start_s``) -> (float32 mono at sample_rate, start in
    seconds). Only the crop is read from disk (soundfile seeks), so hour-long files cost no more than short ones."""
    try:
        with sf.SoundFile(path) as f:
            crop = min(f.frames, int(max_seconds * f.samplerate))
            if start_s is None:
                start = int(np.random.default_rng(seed).integers(0, f.frames - crop + 1))
            else:
                start = min(int(start_s * f.samplerate), f.frames - crop)
            f.seek(start)
            wav = f.read(crop, dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"cannot read training audio {path}: {e}") from e
    return prepare_waveform(wav, sr, sample_rate), start / sr


class CropDataset(Dataset):
    """Item ``(index, seed)`` -> a random crop of at most ``max_seconds`` as float32 mono at ``sample_rate``."""

    def __init__(self, utterances: Sequence[Utterance], max_seconds: float, sample_rate: int = 16000) -> None:
        self.utterances = list(utterances)
        self.max_seconds = max_seconds
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: CropKey) -> np.ndarray:
        index, seed = key
        return read_crop(self.utterances[index].audio, self.max_seconds, seed, self.sample_rate)[0]


def collate_waveforms(items: list[np.ndarray] | list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Waveforms, or dicts of equally long waveforms -> zero-padded (B, N) tensors per key + "lengths" (B,).

    Plain arrays are collated under the key "wav".
    """
    rows = [item if isinstance(item, dict) else {"wav": item} for item in items]
    lengths = torch.tensor([len(next(iter(r.values()))) for r in rows])
    out: dict[str, torch.Tensor] = {"lengths": lengths}
    for key in rows[0]:
        padded = torch.zeros(len(rows), int(lengths.max()))
        for i, r in enumerate(rows):
            padded[i, : len(r[key])] = torch.from_numpy(np.ascontiguousarray(r[key]))
        out[key] = padded
    return out


class FrameBudgetBatches:
    """Infinite stream of batches whose padded size (batch size x longest crop) stays under ``batch_seconds``.

    Utterances are shuffled per epoch, sorted by length within windows of 64 (less padding), cut into batches,
    and the batches shuffled. Global batch g goes to rank g % world_size; ``start`` skips the ``start``
    batches each rank already drew (the trainer's data position), so a resumed run sees exactly the data it would
    have seen.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_seconds: float,
        max_seconds: float,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batch_size: int = 256,
    ) -> None:
        self.crops = np.minimum(np.asarray(durations, dtype=float), max_seconds)
        if batch_seconds < max_seconds:
            raise ValueError(f"batch budget {batch_seconds}s is smaller than one crop ({max_seconds}s)")
        self.batch_seconds = batch_seconds
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.max_batch_size = max_batch_size

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.crops))
        batches: list[list[int]] = []
        for w in range(0, len(order), 64):
            window = [int(i) for i in sorted(order[w : w + 64], key=lambda i: self.crops[i])]
            # the shared frame-budget rule, in centiseconds (frames at 100/s) so it stays integer
            lengths = [round(100 * self.crops[i]) for i in window]
            batches.extend(pack(window, lengths, round(100 * self.batch_seconds), self.max_batch_size))
        rng.shuffle(batches)
        return batches

    def iterate(self, start_step: int = 0) -> Iterator[list[CropKey]]:
        """Yield this rank's batches from its ``start_step``-th on, as (index, crop seed) keys."""
        g = start_step * self.world_size + self.rank  # global batch index
        epoch, offset = 0, g
        while True:
            batches = self.epoch(epoch)  # whole epochs before ``start_step`` are skipped without yielding
            while offset < len(batches):
                yield [(i, derive_seed(self.seed, g, i)) for i in batches[offset]]
                g += self.world_size
                offset += self.world_size
            offset -= len(batches)
            epoch += 1


def _worker_init(_: int) -> None:
    # Workers leave SIGTERM/SIGINT to the training process, which finishes its step and saves; a worker that died
    # of the same signal first would turn that graceful stop into a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, batches: Iterator[list[CropKey]], num_workers: int = 0,
                collate: Callable[[list[Any]], dict[str, torch.Tensor]] = collate_waveforms) -> DataLoader:
    return DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None,
    )


def loader_factory(dataset: Dataset, durations: Sequence[float], batch_seconds: float, max_seconds: float, seed: int,
                   num_workers: int = 0, collate: Callable[[list[Any]], dict[str, torch.Tensor]] = collate_waveforms):
    """The ``Trainer``'s loader factory: (start, rank, world_size) -> an iterator of collated batches from this
    rank's ``start``-th batch on."""

    def make(start_step: int, rank: int, world_size: int) -> DataLoader:
        batches = FrameBudgetBatches(durations, batch_seconds, max_seconds, seed=seed, rank=rank,
                                     world_size=world_size)
        return make_loader(dataset, batches.iterate(start_step), num_workers, collate)

    return make
