"""CutSets for corpus layouts that Lhotse has no recipe for: any tree of audio files, VoiceBank-DEMAND (clean/noisy
pairs) and LibriMix as its generation scripts write it (a metadata CSV + wavs; Lhotse's own LibriMix recipe mixes
LibriSpeech and WHAM! cuts on the fly instead). LibriSpeech, LibriTTS, Libri-Light, LJSpeech and VCTK go through
Lhotse's recipes (`training.data.lhotse_recipes`).

Each builder reads a corpus where it lies (nothing is copied) and writes a CutSet (`training.data.manifest`): audio
paths relative to the manifest's folder when the audio lies under it, so a corpus directory holding its own manifests
can be moved whole; absolute otherwise. Pairs and mixtures become custom Recordings of the cut (``noisy``, ``sources``,
``noise``), aligned with it.

    speechflow manifest tree LibriSpeech/train-clean-100 data/ls100_cuts.jsonl.gz
    speechflow manifest voicebank VoiceBank-DEMAND data/vbd/
    speechflow manifest librimix Libri2Mix/wav16k/max/metadata/mixture_train-100_mix_both.csv out_cuts.jsonl.gz
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from .convert import cut_from_row
from .cuts import ManifestError, write_cuts

log = logging.getLogger(__name__)

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3")
# Official VoiceBank-DEMAND folder names: (clean, noisy) per split; train comes as a 28- or 56-speaker set.
VOICEBANK_DIRS: dict[str, list[tuple[str, str]]] = {
    "train": [("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
              ("clean_trainset_56spk_wav", "noisy_trainset_56spk_wav")],
    "test": [("clean_testset_wav", "noisy_testset_wav")],
}
LIBRIMIX_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length")


# ----------------------------------------------------------------------------------------------- shared helpers

def write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    """Rows with paths relative to ``out``'s folder (the converter's format) -> the CutSet ``out``."""
    write_cuts(out, [cut_from_row(row, out.parent, out.parent) for row in rows])


def _abs(path: str | os.PathLike) -> Path:
    # abspath, not resolve(): following symlinks would change which paths count as "under" the manifest directory.
    return Path(os.path.abspath(path))


def _manifest_path(audio: Path, manifest_dir: Path) -> str:
    """Relative to the manifest's directory when the audio lies under it, absolute otherwise."""
    audio = _abs(audio)
    try:
        return audio.relative_to(manifest_dir).as_posix()
    except ValueError:
        return str(audio)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ManifestError(f"{what} not found: {path}")


def _duration(path: Path) -> float | None:
    """Duration in seconds, or None when the file cannot be read as audio (corrupt, truncated, unknown format)."""
    try:
        return float(sf.info(str(path)).duration)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        return None


def _report_skipped(where: str | Path, short: int, unreadable: int, min_duration: float) -> None:
    if short or unreadable:
        log.warning("%s: skipped %d file(s) shorter than %g s and %d unreadable file(s)",
                    where, short, min_duration, unreadable)


# ------------------------------------------------------------------------------------- LibriSpeech / Libri-Light

def _find_audio(root: Path, exts: Iterable[str]) -> list[Path]:
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    files = (p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())  # deterministic across filesystems


def _read_transcripts(folder: Path) -> dict[str, str]:
    """Utterance id -> text from LibriSpeech ``*.trans.txt`` files (``<utt-id> <TRANSCRIPT>`` per line)."""
    texts: dict[str, str] = {}
    for trans in sorted(folder.glob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt and text.strip():
                texts[utt] = text.strip()
    return texts


def audio_tree_manifest(root: str | os.PathLike, out: str | os.PathLike, exts: Sequence[str] = AUDIO_EXTS,
                        min_duration: float = 0.5) -> int:
    """One row per audio file under ``root`` (any depth); returns the number of rows written to ``out``.

    ``speaker`` is the first directory level under ``root`` (LibriSpeech / Libri-Light ``speaker/chapter/file``);
    ``text`` comes from a ``*.trans.txt`` in the file's folder when it lists the file's stem.
    Files shorter than ``min_duration`` and unreadable files are skipped and counted in one warning.
    """
    root, out = _abs(root), _abs(out)
    _require_dir(root, "audio directory")
    files = _find_audio(root, exts)
    if not files:
        raise ManifestError(f"no audio files ({', '.join(exts)}) found under {root}")
    transcripts: dict[Path, dict[str, str]] = {}  # one read per folder, not per file
    rows: list[dict[str, Any]] = []
    short = unreadable = 0
    for path in files:
        duration = _duration(path)
        if duration is None:
            unreadable += 1
            continue
        if duration < min_duration or duration <= 0:
            short += 1
            continue
        row: dict[str, Any] = {"audio": _manifest_path(path, out.parent), "duration": round(duration, 4)}
        parts = path.relative_to(root).parts
        if len(parts) > 1:  # a file directly under root has no speaker folder
            row["speaker"] = parts[0]
        if path.parent not in transcripts:
            transcripts[path.parent] = _read_transcripts(path.parent)
        if path.stem in transcripts[path.parent]:
            row["text"] = transcripts[path.parent][path.stem]
        rows.append(row)
    _report_skipped(root, short, unreadable, min_duration)
    if not rows:
        raise ManifestError(f"{root}: none of the {len(files)} audio files is readable and at least {min_duration} s")
    write_manifest(out, rows)
    return len(rows)


# ------------------------------------------------------------------------------------------------ VoiceBank-DEMAND

def _wav_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file()}


def _voicebank_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(clean, noisy) pairs of one split, matched by file name; any unmatched file is an error."""
    present = [(root / c, root / n) for c, n in VOICEBANK_DIRS[split] if (root / c).is_dir() or (root / n).is_dir()]
    if not present:
        expected = " or ".join(f"{c}/ + {n}/" for c, n in VOICEBANK_DIRS[split])
        raise ManifestError(f"{root}: no VoiceBank-DEMAND {split} set (expected {expected})")
    pairs: list[tuple[Path, Path]] = []
    for clean_dir, noisy_dir in present:
        _require_dir(clean_dir, f"VoiceBank-DEMAND {split} clean directory")
        _require_dir(noisy_dir, f"VoiceBank-DEMAND {split} noisy directory")
        clean, noisy = _wav_names(clean_dir), _wav_names(noisy_dir)
        for names, have, lacks in ((clean - noisy, clean_dir, noisy_dir), (noisy - clean, noisy_dir, clean_dir)):
            if names:
                raise ManifestError(f"{len(names)} file(s) in {have} have no twin in {lacks}, "
                                    f"e.g. {sorted(names)[0]}")
        pairs += [(clean_dir / name, noisy_dir / name) for name in sorted(clean)]
    if not pairs:
        raise ManifestError(f"{root}: no .wav files in the VoiceBank-DEMAND {split} set")
    return pairs


def voicebank_demand_manifest(root: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """``train_cuts.jsonl.gz`` and ``test_cuts.jsonl.gz`` in the directory ``out``; returns split -> cuts written.

    Cuts: the clean file, its ``noisy`` twin as a custom Recording, speaker ``p226`` for ``p226_001.wav``.
    When both the 28- and 56-speaker training sets are present, both go into the train CutSet.
    """
    root, out = _abs(root), _abs(out)
    _require_dir(root, "VoiceBank-DEMAND directory")
    splits = {split: _voicebank_pairs(root, split) for split in VOICEBANK_DIRS}  # validate all before writing any
    counts: dict[str, int] = {}
    for split, pairs in splits.items():
        rows: list[dict[str, Any]] = []
        unreadable = 0
        for clean, noisy in pairs:
            duration = _duration(clean)
            if duration is None or duration <= 0:
                unreadable += 1
                continue
            rows.append({"audio": _manifest_path(clean, out), "noisy": _manifest_path(noisy, out),
                         "duration": round(duration, 4), "speaker": clean.stem.split("_")[0]})
        _report_skipped(f"{root} ({split})", 0, unreadable, 0.0)
        if not rows:
            raise ManifestError(f"{root}: no readable clean files in the VoiceBank-DEMAND {split} set")
        write_manifest(out / f"{split}_cuts.jsonl.gz", rows)
        counts[split] = len(rows)
    return counts


# ------------------------------------------------------------------------------------------------------- LibriMix

def _read_librimix_csv(csv_path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of the metadata CSV and its ``source_N_path`` columns in order (2 for Libri2Mix, 3 for Libri3Mix)."""
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in LIBRIMIX_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected "
                                f"{','.join(LIBRIMIX_COLUMNS[:-1])},[source_3_path,][noise_path,]length")
        reader.fieldnames = header  # stripped names, so " length" still reads as "length"
        rows = list(reader)
    if not rows:
        raise ManifestError(f"{csv_path}: no mixtures listed")
    n_sources = sum(1 for h in header if h.startswith("source_") and h.endswith("_path"))
    return rows, [f"source_{i}_path" for i in range(1, n_sources + 1) if f"source_{i}_path" in header]


def _sample_rate(mixture: Path) -> int:
    if not mixture.is_file():
        raise ManifestError(f"first mixture not found: {mixture} (pass --root / root= for relative CSV paths)")
    try:
        return int(sf.info(str(mixture)).samplerate)
    except (RuntimeError, OSError) as e:
        raise ManifestError(f"cannot read the first mixture {mixture}: {e}") from e


def librimix_manifest(csv_path: str | os.PathLike, out: str | os.PathLike,
                      root: str | os.PathLike | None = None) -> int:
    """One row per mixture of a LibriMix metadata CSV; returns the number of rows written to ``out``.

    Cuts: the mixture (id ``mixture_ID``) with ``sources`` (one channel per speaker) and ``noise`` when the CSV has a
    ``noise_path`` column, as custom Recordings. Relative CSV paths are resolved against ``root`` (default: the
    CSV's directory).
    """
    csv_path, out = _abs(csv_path), _abs(out)
    if not csv_path.is_file():
        raise ManifestError(f"LibriMix metadata CSV not found: {csv_path}")
    base = _abs(root) if root is not None else csv_path.parent
    records, source_cols = _read_librimix_csv(csv_path)

    def where(value: str) -> Path:
        path = Path(value.strip())
        return path if path.is_absolute() else base / path

    sr = _sample_rate(where(records[0]["mixture_path"]))
    rows: list[dict[str, Any]] = []
    for lineno, rec in enumerate(records, 2):  # line 1 is the header
        try:
            length = int(float(rec["length"]))
        except (TypeError, ValueError) as e:
            raise ManifestError(f"{csv_path}:{lineno}: length must be a sample count, got {rec['length']!r}") from e
        if length <= 0:
            raise ManifestError(f"{csv_path}:{lineno}: length must be > 0, got {length}")
        row: dict[str, Any] = {
            "audio": _manifest_path(where(rec["mixture_path"]), out.parent),
            "sources": [_manifest_path(where(rec[c]), out.parent) for c in source_cols],
            "duration": round(length / sr, 4),
            "id": rec["mixture_ID"].strip(),
        }
        if rec.get("noise_path"):
            row["noise"] = _manifest_path(where(rec["noise_path"]), out.parent)
        rows.append(row)
    write_manifest(out, rows)
    return len(rows)
