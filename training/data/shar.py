"""Lhotse Shar: a CutSet written as numbered shards (``cuts.000000.jsonl.gz`` + ``recording.000000.tar`` + one tar
per custom audio field), read sequentially: one open file per shard instead of one random read per utterance, which
is what network storage serves well. Writing shards: `training.data.shar_export`.

Training reads a Shar directory shard by shard; under DDP every rank reads its own shards (see
`training.data.loading`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse import CutSet
from lhotse.lazy import LazyIteratorChain, LazyManifestIterator

from .cuts import ManifestError


def is_shar(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and any(Path(path).glob("cuts.*.jsonl*"))


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
