"""JSONL manifests: one utterance per line, at least ``{"audio": path, "duration": seconds}``.

Relative audio paths are resolved against the manifest's directory, so a corpus directory can be moved whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.errors import SpeechFlowError


class ManifestError(SpeechFlowError, ValueError):
    """A manifest that is missing, empty or has a malformed line."""


@dataclass
class Utterance:
    audio: Path
    duration: float
    meta: dict[str, Any] = field(default_factory=dict)  # speaker, text, phones, ... (task-specific)


def read_manifest(path: str | os.PathLike, min_duration: float = 0.0) -> list[Utterance]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    items: list[Utterance] = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = Path(row.pop("audio"))
                duration = float(row.pop("duration"))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ManifestError(f"{path}:{lineno}: expected JSON with 'audio' and 'duration' ({e})") from e
            if duration <= 0:
                raise ManifestError(f"{path}:{lineno}: duration must be > 0, got {duration}")
            if duration >= min_duration:
                items.append(Utterance(audio if audio.is_absolute() else path.parent / audio, duration, row))
    if not items:
        raise ManifestError(f"{path}: no utterances (of at least {min_duration} s)")
    return items


def rows_with_phones(utterances: list[Utterance]) -> list[Utterance]:
    """The rows that carry phone alignments (``phones``: [[symbol, start, end], ...]), or a clear error."""
    rows = [u for u in utterances if u.meta.get("phones")]
    if not rows:
        raise ManifestError("no manifest rows with phone alignments ('phones'): build the corpus with espeak-ng "
                            "speakers, or add MFA alignments")
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """All or nothing: a half-written manifest (a killed build) would silently train on fewer rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)
