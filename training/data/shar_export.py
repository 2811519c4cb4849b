"""Writing a CutSet as Lhotse Shar shards (`training.data.shar` reads them):

    speechflow shard --data train_cuts.jsonl.gz --out shards/ [--shard-size 1000] [--format flac]
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from lhotse import CutSet, Recording

from .cuts import ManifestError
from .manifest import open_cuts

AUDIO_FORMATS = ("flac", "wav", "mp3")


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
