"""Helpers both evaluations need: reading a manifest, speaker engines, NaN-aware means, output checks and JSON.

They live here, not in either evaluation, so the TTS evaluation does not reach into the enhancement one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data.manifest import Utterance, read_manifest

ENGINES = ("espeak", "flite", "festival")  # corpus speaker names start with the engine


def utterances(manifest: str | os.PathLike | Sequence[Utterance]) -> list[Utterance]:
    """A manifest path or an already read list of utterances -> the utterances."""
    return read_manifest(manifest) if isinstance(manifest, str | os.PathLike) else list(manifest)


def engine(speaker: str) -> str:
    """The synthesis engine of a corpus speaker ("espeak-en-a" -> "espeak"); "other" for anyone else."""
    prefix = speaker.split("-", 1)[0]
    return prefix if prefix in ENGINES else "other"


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)  # None: a NaN after a JSON round trip


def nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (metrics are NaN where undefined for an utterance); NaN if there are none."""
    kept = [v for v in values if finite(v)]
    return float(np.mean(kept)) if kept else math.nan


def checked(out: np.ndarray, case_id: str, ndim: int) -> np.ndarray:
    """A system output as float32 of the expected rank ((n,) or (2, n)), or a clear error naming the case."""
    x = np.asarray(out, dtype=np.float32)
    if x.ndim != ndim or (ndim == 2 and x.shape[0] != 2) or x.shape[-1] == 0:
        want = "(n,)" if ndim == 1 else "(2, n)"
        raise ValueError(f"case {case_id}: the process returned shape {x.shape}, expected {want}")
    if not np.isfinite(x).all():
        raise ValueError(f"case {case_id}: the process returned NaN or infinite samples")
    return x


def jsonable(x: Any) -> Any:
    """numpy types -> Python, NaN/inf -> null (strict JSON that any reader accepts)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Results (or any report dict) as indented strict JSON; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n")
