"""Rows of the JSONL manifests used before CutSets -> Lhotse cuts.

An old row is ``{"audio": path, "duration": s}`` plus any of ``speaker``, ``text``, ``phones`` ([[symbol, start,
end], ...] in seconds), ``phones_source``, ``noisy`` (a clean/noisy pair), ``sources`` (a mixture's speakers),
``noise`` and ``id``; relative paths are relative to the old manifest's folder. The synthetic corpus builder makes
its cuts through the same function, so converted and freshly built corpora are the same CutSet.

    speechflow manifest convert OLD.jsonl NEW_cuts.jsonl.gz
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.supervision import AlignmentItem

from .cuts import PHONE, SOURCE_KEY, ManifestError, resolve_paths, write_cuts


def stored_path(audio: Path, out_dir: Path) -> str:
    """Relative to the manifest's folder when the audio lies under it, absolute otherwise."""
    audio = Path(os.path.abspath(audio))  # abspath, not resolve(): symlinks must not change what is "under"
    try:
        return audio.relative_to(out_dir).as_posix()
    except ValueError:
        return str(audio)


def recording(rec_id: str, files: list[Path], out_dir: Path, num_samples: int | None = None,
              sampling_rate: int | None = None) -> Recording:
    """One Recording of one or more equally long files (one channel each: a mixture's sources), paths stored for a
    manifest in ``out_dir``. Headers are read unless the length and rate are given."""
    if num_samples is None or sampling_rate is None:
        try:
            info = sf.info(str(files[0]))
        except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
            raise ManifestError(f"cannot read audio {files[0]}: {e}") from e
        num_samples, sampling_rate = info.frames, info.samplerate
    sources = [AudioSource(type="file", channels=[k], source=stored_path(f, out_dir)) for k, f in enumerate(files)]
    return Recording(rec_id, sources, sampling_rate, num_samples, num_samples / sampling_rate)


def cut_id(audio: str) -> str:
    """A cut id from a stored path: no folders (Shar names tar members by id) and no suffix."""
    return re.sub(r"[^\w.+-]+", "_", str(Path(audio).with_suffix("")).strip("/"))


def cut_from_row(row: dict[str, Any], base: Path, out_dir: Path, num_samples: int | None = None,
                 sampling_rate: int | None = None) -> MonoCut:
    """An old manifest row (paths relative to ``base``) -> a cut for a manifest in ``out_dir``."""
    def where(p: str) -> Path:
        return Path(p) if os.path.isabs(p) else base / p

    try:
        audio = where(row["audio"])
        cid = str(row.get("id") or cut_id(stored_path(audio, out_dir)))
        rec = recording(cid, [audio], out_dir, num_samples, sampling_rate)
    except (KeyError, TypeError) as e:
        raise ManifestError(f"expected a row with 'audio' and 'duration', got {row!r:.200}") from e
    alignment = None
    if row.get("phones"):
        alignment = {PHONE: [AlignmentItem(str(s), float(a), float(b) - float(a))  # end = start + duration, exactly
                             for s, a, b in row["phones"]]}
    custom = {SOURCE_KEY: row[SOURCE_KEY]} if row.get(SOURCE_KEY) else None
    sup = SupervisionSegment(cid, cid, 0.0, rec.duration, text=row.get("text"), speaker=row.get("speaker"),
                             alignment=alignment, custom=custom)
    cut = MonoCut(cid, 0.0, rec.duration, 0, supervisions=[sup], recording=rec)
    if row.get("noisy"):
        cut.custom = {"noisy": recording(f"{cid}-noisy", [where(row["noisy"])], out_dir)}
    if row.get("sources"):
        files = [where(p) for p in row["sources"]]
        cut.custom = {**(cut.custom or {}), "sources": recording(f"{cid}-sources", files, out_dir)}
    if row.get("noise"):
        cut.custom = {**(cut.custom or {}), "noise": recording(f"{cid}-noise", [where(row["noise"])], out_dir)}
    return cut


def legacy_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if float(row["duration"]) <= 0:
                    raise ValueError(f"duration must be > 0, got {row['duration']}")
                row["audio"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ManifestError(f"{path}:{lineno}: expected JSON with 'audio' and 'duration' ({e})") from e
            yield row


def legacy_cuts(path: str | os.PathLike) -> CutSet:
    """An old manifest as an (eager) CutSet with absolute paths."""
    path = Path(path)
    base = path.parent.absolute()
    cuts = CutSet([cut_from_row(row, base, base) for row in legacy_rows(path)])
    if not len(cuts):
        raise ManifestError(f"{path}: no utterances")
    return cuts.map(partial(resolve_paths, base=base)).to_eager()


def convert_manifest(old: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the CutSet of an old manifest to ``out`` (paths relative to ``out``'s folder where they lie under it);
    returns the number of cuts."""
    old, out = Path(old), Path(os.path.abspath(out))
    if not old.is_file():
        raise ManifestError(f"manifest not found: {old}")
    base = old.parent.absolute()
    cuts = [cut_from_row(row, base, out.parent) for row in legacy_rows(old)]
    if not cuts:
        raise ManifestError(f"{old}: no utterances")
    write_cuts(out, cuts)
    return len(cuts)
