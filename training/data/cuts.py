"""Lhotse cuts as the training data uses them: the keys, the manifest error, writing a CutSet, and what a cut carries.

A cut is one utterance (or a segment of a long recording). What the tasks read from it:

- the audio: ``cut.recording`` (a file, or in-memory bytes when read from Shar);
- ``speaker`` and ``text``: its first supervision's;
- phone alignments: the supervisions' ``alignment["phone"]`` (``AlignmentItem(symbol, start, duration)``, times in
  seconds from the cut's start); labels made by the prompt aligner say so in the supervision's ``custom``;
- real pairs / mixtures: ``cut.custom["noisy"]`` (VoiceBank-DEMAND) or ``cut.custom["sources"]`` (LibriMix, one
  channel per speaker), Recordings aligned with the cut's own, so a crop of the cut crops them too.

Reading a manifest (any format) is `training.data.manifest`'s; this module depends on no other training module, so
the readers and writers of every format (`manifest`, `convert`, `shar`) can share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lhotse import CutSet, Recording
from lhotse.cut import Cut

from model.errors import SpeechFlowError

PHONE = "phone"  # the alignment key of phone alignments in supervisions
SOURCE_KEY = "phones_source"  # supervision custom: who made the phones ("aligner" for `speechflow label`)
BANDWIDTH_KEY = "bandwidth_hz"  # supervision custom: how high the audio reaches (real corpora record it)


class ManifestError(SpeechFlowError, ValueError):
    """A manifest that is missing, empty, of an old format or otherwise unusable."""


# -------------------------------------------------------------------------------------------------- paths, writing


def _resolve(recording: Recording, base: Path) -> Recording:
    for source in recording.sources:
        if source.type == "file" and not os.path.isabs(source.source):
            source.source = str(base / source.source)
    return recording


def resolve_paths(cut: Cut, base: Path) -> Cut:
    """Relative file paths of the cut's recordings (its own and custom ones) -> under ``base``."""
    if cut.has_recording:
        _resolve(cut.recording, base)
    for value in (cut.custom or {}).values():
        if isinstance(value, Recording):
            _resolve(value, base)
    return cut


def write_cuts(path: str | os.PathLike, cuts: Iterable[Cut]) -> Path:
    """All or nothing: a half-written manifest (a killed build) would silently train on fewer cuts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")  # not model.checkpoint.atomic_write: Lhotse picks the format by suffix
    CutSet(cuts).to_file(tmp)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------- what a cut carries


def cut_phones(cut: Cut) -> list[tuple[str, float, float]] | None:
    """(symbol, start s, end s) from the cut's start, over all its supervisions; None when it has none."""
    phones = [(item.symbol, item.start, item.start + item.duration)
              for sup in cut.supervisions for item in (sup.alignment or {}).get(PHONE, [])]
    return phones or None


def has_phones(cut: Cut) -> bool:
    """The training filter of the tasks that need phone alignments (a function, so it pickles)."""
    return any((sup.alignment or {}).get(PHONE) for sup in cut.supervisions)


def cut_speaker(cut: Cut) -> str | None:
    return next((s.speaker for s in cut.supervisions if s.speaker), None)


def cut_text(cut: Cut) -> str | None:
    return next((s.text for s in cut.supervisions if s.text), None)


def phones_source(cut: Cut) -> str | None:
    return next(((s.custom or {}).get(SOURCE_KEY) for s in cut.supervisions if (s.custom or {}).get(SOURCE_KEY)),
                None)
