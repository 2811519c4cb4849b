"""Training data on disk: Lhotse CutSets, as a ``.jsonl.gz`` manifest or a directory of Lhotse Shar shards, read as
a CutSet (`open_cuts`) or as whole utterances (`read_manifest`). The cut format itself: `training.data.cuts`.

Relative audio paths in a manifest resolve against the manifest's folder (a corpus directory can be moved whole);
absolute ones are kept. Lhotse itself resolves relative paths against the working directory, so manifests written
here for other tools should hold absolute paths (``speechflow manifest`` recipes do).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from lhotse import CutSet
from lhotse.cut import Cut

from .convert import legacy_cuts
from .cuts import (
    BANDWIDTH_KEY,
    SOURCE_KEY,
    ManifestError,
    cut_phones,
    cut_speaker,
    cut_text,
    phones_source,
    resolve_paths,
    write_cuts,
)
from .shar import is_shar, open_shar

# --------------------------------------------------------------------------------------------------------- reading


def _first_row(path: Path) -> dict[str, Any] | None:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            for line in f:
                if line.strip():
                    return json.loads(line)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read manifest {path}: {e}") from e
    return None


def is_legacy(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a manifest of the JSONL format before CutSets (``{"audio": ..., "duration": ...}``)."""
    row = _first_row(Path(path)) if Path(path).is_file() else None
    return row is not None and "audio" in row and "recording" not in row


def open_cuts(path: str | os.PathLike) -> CutSet:
    """A lazy CutSet from a cut manifest (``.jsonl.gz`` / ``.jsonl``) or a Shar directory.

    A manifest of the old JSONL format is converted in memory (as ``speechflow manifest convert`` would, reading
    every file's header): fine for small corpora; convert large ones once.
    """
    path = Path(path)
    if path.is_dir():
        if not is_shar(path):
            raise ManifestError(f"{path} is a directory but not Lhotse Shar shards (no cuts.*.jsonl.gz)")
        return open_shar(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    if _first_row(path) is None:
        raise ManifestError(f"{path}: no cuts")
    if is_legacy(path):
        return legacy_cuts(path)
    base = path.parent.absolute()
    return CutSet.from_jsonl_lazy(path).map(partial(resolve_paths, base=base))


def combine_cuts(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, seed: int = 0) -> int:
    """Several cut manifests -> one shuffled manifest with absolute audio paths; returns the cuts written.

    Training reads a manifest through a shuffle buffer (`TrainConfig.shuffle_buffer`), so a plain concatenation
    would train on one corpus, then the other: the cuts are shuffled here, with ``seed``. Each cut's id is
    prefixed with its manifest's folder name (``corpus-wavs_espeak-...``; the input's position where two folders
    share a name), since two corpora built by the same tool reuse ids. Eager: for manifests that fit in memory.
    """
    paths = [Path(p) for p in inputs]
    if len(paths) < 2:
        raise ManifestError(f"combine needs two or more manifests, got {len(paths)}")
    for path in paths:
        if path.is_dir():
            raise ManifestError(f"{path}: combine reads cut manifests (.jsonl.gz), not Shar directories")
    labels = [p.absolute().parent.name or str(k) for k, p in enumerate(paths)]
    if len(set(labels)) < len(labels):
        labels = [str(k) for k in range(len(paths))]
    cuts = [cut.with_id(f"{label}-{cut.id}")
            for path, label in zip(paths, labels, strict=True) for cut in open_cuts(path)]
    random.Random(seed).shuffle(cuts)
    write_cuts(out, cuts)
    return len(cuts)


def speed_perturbed_cuts(source: str | os.PathLike, out: str | os.PathLike, factors: Sequence[float]) -> int:
    """A copy of every cut of ``source`` per speed factor (Lhotse's ``perturb_speed``: resampled, so pitch and formants
    move with the tempo), each speaker renamed ``<speaker>-sp<factor>``; returns the cuts written.

    Speed perturbation is a standard speaker augmentation (Yamamoto et al., Interspeech 2019): a corpus of a few real
    talkers gives the two-speaker mixtures and the enhancement targets three times as many voices. The copies' audio
    is made on the fly from the same files; each supervision's ``bandwidth_hz`` scales with the factor, so the
    wideband filter sees what a copy holds.
    """
    factors = [float(f) for f in factors]
    if not factors or any(not 0.5 <= f <= 2.0 or f == 1.0 for f in factors):
        raise ManifestError(f"speed factors must lie in [0.5, 2] and differ from 1, got {factors}")
    cuts = []
    for cut in open_cuts(source):
        nyquist = cut.sampling_rate / 2
        for factor in factors:
            copy = cut.perturb_speed(factor)
            for sup in copy.supervisions:
                if sup.speaker:
                    sup.speaker = f"{sup.speaker}-sp{factor:g}"
                if sup.custom and BANDWIDTH_KEY in sup.custom:
                    sup.custom = {**sup.custom, BANDWIDTH_KEY: min(nyquist, sup.custom[BANDWIDTH_KEY] * factor)}
            cuts.append(copy)
    write_cuts(out, cuts)
    return len(cuts)


# ------------------------------------------------------------------------------------------------------ utterances


@dataclass
class Utterance:
    """A whole-utterance view of a cut for code that reads utterances one by one (evaluation, voices, labelling,
    the duration model): ``audio`` is the file when the cut is a whole single-file recording, else None."""

    id: str
    audio: Path | None
    duration: float
    meta: dict[str, Any] = field(default_factory=dict)  # speaker, text, phones, phones_source
    cut: Cut | None = None


def utterance(cut: Cut) -> Utterance:
    audio = None
    if cut.has_recording:
        rec = cut.recording
        whole = abs(cut.start) < 1e-6 and abs(cut.duration - rec.duration) < 1e-3
        if whole and len(rec.sources) == 1 and rec.sources[0].type == "file":
            audio = Path(rec.sources[0].source)
    meta = {k: v for k, v in (("speaker", cut_speaker(cut)), ("text", cut_text(cut)), ("phones", cut_phones(cut)),
                               (SOURCE_KEY, phones_source(cut))) if v is not None}
    return Utterance(cut.id, audio, float(cut.duration), meta, cut)


def read_manifest(path: str | os.PathLike, min_duration: float = 0.0) -> list[Utterance]:
    """Every cut of at least ``min_duration`` s as an `Utterance` (eager: for test splits and small corpora)."""
    items = [utterance(c) for c in open_cuts(path) if c.duration >= min_duration]
    if not items:
        raise ManifestError(f"{path}: no utterances (of at least {min_duration} s)")
    return items


def rows_with_phones(utterances: list[Utterance]) -> list[Utterance]:
    """The utterances that carry phone alignments, or a clear error."""
    rows = [u for u in utterances if u.meta.get("phones")]
    if not rows:
        raise ManifestError("no cuts with phone alignments: build the corpus with espeak-ng speakers, import MFA "
                            "alignments, or label the corpus (`speechflow label`)")
    return rows
