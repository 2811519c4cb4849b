"""Training batches from Lhotse CutSets: Lhotse's DynamicBucketingSampler under our frame budget, random crops read
by DataLoader workers, in a deterministic order that a resumed run continues exactly.

- Budget: a batch's padded size, rows x longest crop, stays within ``batch_seconds`` (the rule of
  `model.packing`, which Lhotse's TimeConstraint applies too), counting each cut as its crop, min(duration,
  ``max_seconds``); `CropBudget`.
- Order: epoch e is one pass of a DynamicBucketingSampler seeded with (seed, e); crop offsets and augmentation are
  seeded by (seed, epoch, cut id), so they do not depend on which rank or worker reads the cut.
- DDP: from a manifest, Lhotse's sampler gives rank r every r-th batch of the shared stream; from Shar shards,
  each rank reads its own shards (epoch e deals a seeded permutation of the shards out to the ranks), so a rank
  never reads another's audio. Either way the ranks see disjoint data within an epoch.
- Resume: the position is (epoch, batches this rank has drawn in it), carried with every batch through the
  workers, so the trainer saves the position of the last batch it trained on (not of the ones prefetched); a
  resumed run rebuilds that epoch's sampler and skips the drawn batches (cut metadata only, no audio decoded).
"""

from __future__ import annotations

import signal
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.sampling.base import TimeConstraint
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from model.audio import prepare_waveform
from model.errors import AudioError

from .cuts import BANDWIDTH_KEY, ManifestError
from .manifest import open_cuts
from .shar import is_shar, num_shards, open_shar

BINS_ESTIMATE_CUTS = 5000  # cuts read (metadata only) to place the bucket boundaries, once per run


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from integers (stable across runs and platforms, unlike ``hash``)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def cut_seed(seed: int, epoch: int, cut: Cut) -> int:
    return derive_seed(seed, epoch, zlib.crc32(cut.id.encode()))


# --------------------------------------------------------------------------------------------- position, budget


@dataclass(frozen=True)
class DataPosition:
    """Where a rank is in its data: ``batch`` batches of ``epoch`` drawn."""

    epoch: int = 0
    batch: int = 0


@dataclass
class BatchKey:
    """What the sampler hands a worker: this rank's ``index``-th batch of ``epoch``."""

    epoch: int
    index: int
    cuts: CutSet


@dataclass
class PositionedBatch:
    """A collated batch and the data position after it (what the trainer saves)."""

    tensors: dict[str, Tensor]
    position: DataPosition


@dataclass
class CropBudget(TimeConstraint):
    """Lhotse's padded-duration constraint with each cut counted as its crop (min(duration, max_seconds))."""

    max_seconds: float | None = None

    def measure_length(self, example: Cut) -> float:
        return min(example.duration, self.max_seconds) if self.max_seconds else example.duration

    def add(self, example: Cut) -> None:
        length = self.measure_length(example)
        self.current += length
        self.longest_seen = max(self.longest_seen, length)
        self.num_cuts += 1


# -------------------------------------------------------------------------------------------------- the stream


@dataclass
class SamplerConfig:
    budget: float  # padded length per batch, in the constraint's units (seconds, or phones)
    max_seconds: float | None = None  # crop length; None: whole cuts
    seed: int = 0
    max_cuts: int = 256
    num_buckets: int = 10
    buffer_size: int = 5000  # cuts held for bucketing and shuffling (with their audio, when read from Shar)
    constraint: type[CropBudget] = CropBudget


class CutStream:
    """This rank's batches (`BatchKey`s) of a manifest or Shar directory, epoch after epoch, from a position."""

    def __init__(self, data: str | Path, cfg: SamplerConfig, keep: Callable[[Cut], bool] | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.data, self.cfg, self.keep = Path(data), cfg, keep
        self.rank, self.world_size = rank, world_size
        self.shar = is_shar(self.data)
        # a manifest is opened once (an old .jsonl is converted on opening: every audio header read), not per epoch
        self._manifest = None if self.shar else open_cuts(self.data)
        if self.shar and num_shards(self.data) < world_size:
            raise ManifestError(f"{self.data}: {num_shards(self.data)} shard(s) for {world_size} processes; "
                                f"re-shard with a smaller --shard-size")
        self.bins = self._bins()

    def constraint(self) -> CropBudget:
        return self.cfg.constraint(max_duration=self.cfg.budget, max_cuts=self.cfg.max_cuts,
                                   max_seconds=self.cfg.max_seconds)

    def _cuts(self, epoch: int | None) -> CutSet:
        """Epoch ``epoch``'s cuts for this rank (Shar: its shards of the epoch); None: metadata of all cuts."""
        if self._manifest is not None:
            cuts = self._manifest
        elif epoch is None:
            cuts = open_shar(self.data, audio=False)
        else:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(num_shards(self.data))
            cuts = open_shar(self.data, shards=[int(i) for i in order[self.rank :: self.world_size]])
        return cuts.filter(self.keep) if self.keep is not None else cuts

    def _bins(self) -> list[float]:
        sample = list(islice(self._cuts(None), BINS_ESTIMATE_CUTS))
        if not sample:
            raise ManifestError(f"{self.data}: no cuts to train on")
        buckets = max(1, min(self.cfg.num_buckets, len(sample)))  # a tiny corpus has fewer cuts than buckets
        return estimate_duration_buckets(sample, num_buckets=buckets, constraint=self.constraint())

    def sampler(self, epoch: int) -> DynamicBucketingSampler:
        rank, world = (0, 1) if self.shar else (self.rank, self.world_size)  # Shar: the shards split the ranks
        with warnings.catch_warnings():  # small in-memory CutSets (converted, the duration model's) are fine too
            warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
            sampler = DynamicBucketingSampler(
                self._cuts(epoch), constraint=self.constraint(), duration_bins=self.bins, shuffle=True,
                seed=self.cfg.seed, rank=rank, world_size=world, buffer_size=self.cfg.buffer_size, drop_last=False)
        sampler.set_epoch(epoch)
        return sampler

    def keys(self, position: DataPosition | None = None) -> Iterator[BatchKey]:
        epoch, skip = (position.epoch, position.batch) if position is not None else (0, 0)
        while True:
            drawn = 0
            for cuts in self.sampler(epoch):
                if drawn >= skip:
                    yield BatchKey(epoch, drawn, cuts)
                drawn += 1
            if drawn == 0:
                raise ManifestError(f"{self.data}: epoch {epoch} has no batches for rank {self.rank}")
            epoch, skip = epoch + 1, 0


# ------------------------------------------------------------------------------------------- crops and datasets


def crop_cut(cut: Cut, max_seconds: float | None, seed: int) -> tuple[Cut, float]:
    """A seeded random crop of at most ``max_seconds`` -> (the cropped cut, its start in s within ``cut``)."""
    if not max_seconds or cut.duration <= max_seconds:
        return cut, 0.0
    sr = cut.sampling_rate
    total, crop = cut.num_samples, int(max_seconds * sr)
    start = int(np.random.default_rng(seed).integers(0, total - crop + 1))
    return cut.truncate(offset=start / sr, duration=crop / sr, preserve_id=True), start / sr


def load_mono(cut: Cut, sample_rate: int, field: str | None = None) -> np.ndarray:
    """The cut's audio (or a custom Recording field of it) -> float32 (n,) at ``sample_rate``; a multi-channel
    field -> (channels, n)."""
    try:
        audio = cut.load_audio() if field is None else cut.load_custom(field)  # (channels, n)
    except Exception as e:  # Lhotse raises several kinds for unreadable audio; name the cut
        raise AudioError(f"cannot read training audio of cut {cut.id}: {e}") from e
    if field == "sources":  # one channel per speaker
        return np.stack([prepare_waveform(ch, cut.sampling_rate, sample_rate) for ch in audio])
    return prepare_waveform(audio.T, cut.sampling_rate, sample_rate)


def collate_waveforms(items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Dicts of equally long waveforms -> zero-padded (B, N) float tensors per key + "lengths" (B,)."""
    lengths = torch.tensor([len(next(iter(r.values()))) for r in items])
    out: dict[str, Tensor] = {"lengths": lengths}
    for key in items[0]:
        padded = torch.zeros(len(items), int(lengths.max()))
        for i, r in enumerate(items):
            padded[i, : len(r[key])] = torch.from_numpy(np.ascontiguousarray(r[key]))
        out[key] = padded
    return out


class CutBatchDataset(Dataset):
    """`BatchKey` -> {"tensors": collated batch, "epoch", "index"}; subclasses say what one cut becomes."""

    def __init__(self, max_seconds: float | None, sample_rate: int = 16000, seed: int = 0) -> None:
        self.max_seconds, self.sample_rate, self.seed = max_seconds, sample_rate, seed

    def item(self, cut: Cut, seed: int) -> dict[str, np.ndarray]:
        crop, _ = crop_cut(cut, self.max_seconds, seed)
        return {"wav": load_mono(crop, self.sample_rate)}

    def items(self, cuts: CutSet, epoch: int) -> list[dict[str, np.ndarray]]:
        return [self.item(cut, cut_seed(self.seed, epoch, cut)) for cut in cuts]

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        return collate_waveforms(items)

    def __getitem__(self, key: BatchKey) -> dict[str, Any]:
        return {"tensors": self.collate(self.items(key.cuts, key.epoch)), "epoch": key.epoch, "index": key.index}


# ------------------------------------------------------------------------------------------------- the loader


def _worker_init(_: int) -> None:
    # Workers leave SIGTERM/SIGINT to the training process, which finishes its step and saves; a worker that died
    # of the same signal first would turn that graceful stop into a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _passthrough(item: dict[str, Any]) -> dict[str, Any]:
    return item


def make_loader(dataset: Dataset, keys: Iterator[BatchKey], num_workers: int = 0) -> Iterator[PositionedBatch]:
    loader = DataLoader(
        dataset, sampler=keys, batch_size=None, collate_fn=_passthrough, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None,
    )
    for out in loader:
        yield PositionedBatch(out["tensors"], DataPosition(out["epoch"], out["index"] + 1))


def loader_factory(data: str | Path, dataset: CutBatchDataset, sampling: SamplerConfig, num_workers: int = 0,
                   keep: Callable[[Cut], bool] | None = None):
    """The ``Trainer``'s loader factory: (position, rank, world_size) -> this rank's batches from ``position`` on."""

    def make(position: DataPosition, rank: int, world_size: int) -> Iterator[PositionedBatch]:
        stream = CutStream(data, sampling, keep, rank=rank, world_size=world_size)
        return make_loader(dataset, stream.keys(position), num_workers)

    return make


def sampler_config(train: Any, **overrides: Any) -> SamplerConfig:
    """The sampling part of a TrainConfig (budget, crop, seed, bucketing)."""
    if train.batch_seconds < train.max_seconds:
        raise ValueError(f"batch budget {train.batch_seconds}s is smaller than one crop ({train.max_seconds}s)")
    fields = {"budget": train.batch_seconds, "max_seconds": train.max_seconds, "seed": train.seed,
              "num_buckets": train.num_buckets, "buffer_size": train.shuffle_buffer}
    return SamplerConfig(**(fields | overrides))


# G.722 holds 7 kHz, its 0.9x speed copies 6.3 kHz (`manifest.speed_perturbed_cuts`); telephone-band sources (4 kHz,
# 4.4 at 1.1x) stay out of the waveform targets (enhancement, separation, the vocoder).
WIDEBAND_HZ = 6000.0


def min_duration(seconds: float) -> Callable[[Cut], bool]:
    return _MinDuration(seconds)


@dataclass(frozen=True)
class _MinDuration:  # a class, not a lambda: CutSet filters may be pickled
    seconds: float

    def __call__(self, cut: Cut) -> bool:
        return cut.duration >= self.seconds


def wideband(min_hz: float = WIDEBAND_HZ) -> Callable[[Cut], bool]:
    """Cuts fit to be an enhancement or separation target: none of their supervisions says the audio stops short of
    ``min_hz`` (``bandwidth_hz``, which the real corpus records; an 8 kHz source resampled to 16 kHz holds nothing
    above 4 kHz, and as a target it would teach the model to low-pass)."""
    return _Wideband(min_hz)


@dataclass(frozen=True)
class _Wideband:
    min_hz: float

    def __call__(self, cut: Cut) -> bool:
        return all((s.custom or {}).get(BANDWIDTH_KEY, self.min_hz) >= self.min_hz for s in cut.supervisions)


def all_of(*predicates: Callable[[Cut], bool]) -> Callable[[Cut], bool]:
    return _AllOf(predicates)


@dataclass(frozen=True)
class _AllOf:
    predicates: tuple[Callable[[Cut], bool], ...]

    def __call__(self, cut: Cut) -> bool:
        return all(p(cut) for p in self.predicates)
