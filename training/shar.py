"""Lhotse Shar: a CutSet written as numbered shards (``cuts.000000.jsonl.gz`` + ``recording.000000.tar`` + one tar
per custom audio field), read sequentially: one open file per shard instead of one random read per utterance, which
is what network storage serves well.

    speechflow shard --data train_cuts.jsonl.gz --out shards/ [--shard-size 1000] [--format flac]

Training reads a Shar directory shard by shard; under DDP every rank reads its own shards (see `training.data`).
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from lhotse import CutSet, Recording
from lhotse.lazy import LazyIteratorChain, LazyManifestIterator

from .manifest import ManifestError, is_shar, open_cuts

AUDIO_FORMATS = ("flac", "wav", "mp3")


def shar_fields(directory: str | os.PathLike) -> dict[str, list[str]]:
    """Field name -> its shard files, in shard order (``cuts`` included); every field has as many as ``cuts``."""
    directory = Path(directory)
    if not is_shar(directory):
        raise ManifestError(f"{directory}: not a Lhotse Shar directory (no cuts.*.jsonl.gz)")
    fields: dict[str, list[str]] = {}
    for path in sorted(directory.iterdir()):
        name = path.name.split(".", 1)[0]
        if path.is_file() and (path.name.endswith(".tar") or path.name.endswith(".jsonl.gz")):
            fields.setdefault(name, []).append(str(path))
    counts = {name: len(paths) for name, paths in fields.items()}
    if len(set(counts.values())) != 1:
        raise ManifestError(f"{directory}: fields have different numbers of shards: {counts}")
    return fields


def open_shar(directory: str | os.PathLike, shards: list[int] | None = None, audio: bool = True) -> CutSet:
    """A lazy CutSet of the given shards (all by default), in that order; ``audio=False`` reads the cut manifests
    only (metadata: durations, supervisions), not the tars."""
    fields = shar_fields(directory)
    if not audio:
        fields = {"cuts": fields["cuts"]}
    if shards is not None:
        fields = {name: [paths[i] for i in shards] for name, paths in fields.items()}
    if not audio:  # the cut manifests alone, chained (their recordings point into tars that are not opened)
        return CutSet(LazyIteratorChain(*[LazyManifestIterator(p) for p in fields["cuts"]]))
    return CutSet.from_shar(fields=fields)


def num_shards(directory: str | os.PathLike) -> int:
    return len(shar_fields(directory)["cuts"])


def audio_fields(cuts: CutSet, probe: int = 100) -> list[str]:
    """``recording`` plus the custom Recording fields (``noisy``, ``sources``, ...) of the first cuts."""
    names = {"recording"}
    for cut in islice(cuts, probe):
        names |= {k for k, v in (cut.custom or {}).items() if isinstance(v, Recording)}
    return sorted(names)


def export_shar(data: str | os.PathLike, out: str | os.PathLike, shard_size: int = 1000, audio_format: str = "flac",
                num_jobs: int = 1) -> int:
    """Write the cuts of ``data`` (a manifest or another Shar directory) with their audio as Shar shards in ``out``;
    returns the number of shards. Every audio field is stored in ``audio_format`` (flac: lossless for 16-bit audio)."""
    if audio_format not in AUDIO_FORMATS:
        raise ManifestError(f"unknown audio format {audio_format!r}; choose from {AUDIO_FORMATS}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ManifestError(f"{out} is not empty: shards are written into an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    cuts = open_cuts(data)
    fields = {name: audio_format for name in audio_fields(cuts)}
    written = cuts.to_shar(out, fields=fields, shard_size=shard_size, num_jobs=num_jobs)
    return len(written["cuts"])
