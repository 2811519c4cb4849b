"""Phone alignments -> frame-level labels and phone durations at the feature frame rate (100 frames/s).

Two sources:
- the synthetic corpus: espeak-ng rows carry ``"phones": [[symbol, start, end], ...]`` in seconds (exact, from the
  synthesiser's phoneme events), in the inventory of `model.text.DEFAULT_INVENTORY`;
- real corpora (LibriTTS and the like): Montreal Forced Aligner TextGrids, read here in Praat's long or short text
  format. MFA's English models label ARPAbet phones with stress digits ("AH0"); `mfa_phones` maps them onto the
  espeak inventory with a mapping (`ARPABET_TO_ESPEAK` is a one-to-one approximation for American English), or
  keeps MFA's own inventory when given none. A checkpoint trained on kept MFA phones then builds its vocabulary from
  the data (`vocab_from_manifest`) and stores it in its config; at inference its text frontend must produce that
  inventory too (a lexicon or G2P of the same phone set), which espeak does not: for espeak-driven TTS, map.

Frame convention. Features come from a centred STFT, so frame i is centred at i / fps seconds. A frame gets the phone
that covers its centre: phone [start, end) owns frames ceil(start * fps) .. ceil(end * fps) - 1. Durations use the
same boundaries, so they are cumulative roundings of the phone times (the total is exact, no drift over an
utterance) and `np.repeat(ids, durations)` equals `phones_to_frames` on the frames the phones cover.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model.errors import SpeechFlowError
from model.text import SILENCE, PhoneVocab

from .manifest import read_manifest

FRAMES_PER_SECOND = 100
PhoneTimes = Sequence[tuple[str, float, float]]  # (symbol, start s, end s)
Tier = list[tuple[str, float, float]]  # (label, start s, end s); for point tiers start == end
MFA_SILENCES = frozenset({"", "sil", "sp", "<eps>"})  # MFA 2 leaves silence unlabelled; MFA 1 wrote sil / sp

# ARPAbet (CMUdict / MFA english_us_arpa) -> espeak-ng en-us mnemonics, checked against `espeak.phonemize` on
# example words. Keys with a stress digit win over the bare phone. AA -> "0": espeak's en-us LOT vowel, 20x more
# frequent than PALM "A:" in the corpus. R-coloured vowels ("AA1 R" = "A@") stay two phones: the map is one-to-one.
ARPABET_TO_ESPEAK: dict[str, str] = {
    "AA": "0", "AE": "a", "AH": "V", "AH0": "@", "AO": "O:", "AW": "aU", "AY": "aI", "EH": "E", "ER": "3:",
    "ER0": "3", "EY": "eI", "IH": "I", "IY": "i:", "IY0": "i", "OW": "oU", "OY": "OI", "UH": "U", "UW": "u:",
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t", "TH": "T", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}  # fmt: skip


class AlignmentError(SpeechFlowError, ValueError):
    """An alignment that cannot be used: unreadable TextGrid, missing tier, phones out of order."""


# ------------------------------------------------------------------------------------------------ frames, durations


def _boundaries(times: np.ndarray, fps: int) -> np.ndarray:
    """Times (s) -> index of the first frame whose centre (i / fps) is at or after each time."""
    # round first: 0.03 * 100 is 3.0000000000000004, whose ceil would move the boundary a whole frame
    return np.ceil(np.round(np.asarray(times, dtype=np.float64) * fps, 6)).astype(np.int64)


def _check_phones(phones: PhoneTimes) -> None:
    if not phones:
        raise AlignmentError("no phones")
    for symbol, start, end in phones:
        if not end >= start >= 0:
            raise AlignmentError(f"phone {symbol!r} has start {start} and end {end}")
    if any(phones[k + 1][1] < phones[k][2] - 1e-6 for k in range(len(phones) - 1)):
        raise AlignmentError("phones overlap or are out of order")


def phones_to_frames(phones: PhoneTimes, num_frames: int, vocab: PhoneVocab, fps: int = FRAMES_PER_SECOND,
                     start: float = 0.0) -> np.ndarray:
    """Phone times -> (num_frames,) int64 ids: each frame gets the phone covering its centre; frames no phone covers
    (before the first, in gaps, after the last) get the silence id. Unknown symbols are `UNK_ID`, with a warning.

    `start` (s) is where frame 0 sits in the phones' time line: a crop read from `start` gets its own labels.
    """
    _check_phones(phones)
    labels = np.full(num_frames, vocab.silence_id, dtype=np.int64)
    ids = vocab.encode([p[0] for p in phones])
    starts = _boundaries(np.array([p[1] for p in phones]) - start, fps).clip(0, num_frames)
    ends = _boundaries(np.array([p[2] for p in phones]) - start, fps).clip(0, num_frames)
    for index, a, b in zip(ids, starts, ends, strict=True):
        labels[a:b] = index
    return labels


def durations_from_phones(phones: PhoneTimes, fps: int = FRAMES_PER_SECOND) -> tuple[list[str], np.ndarray]:
    """Phone times -> (symbols, (N,) int64 frame counts); a phone may get 0 frames. The counts sum to the frames from
    the first phone's start to the last one's end (cumulative rounding), and equal `phones_to_frames`'s runs.

    Gaps between phones (MFA tiers have none, espeak rows none) are given to the phone before them.
    """
    _check_phones(phones)
    starts = _boundaries([p[1] for p in phones], fps)
    ends = _boundaries([p[2] for p in phones], fps)
    durations = np.diff(np.append(starts, ends[-1]))
    return [p[0] for p in phones], durations


def frame_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of frames whose label agrees (both (T,) int; compared over the shorter length, the rest count wrong)."""
    pred, true = np.asarray(pred), np.asarray(true)
    n = min(len(pred), len(true))
    return float(np.sum(pred[:n] == true[:n]) / max(len(pred), len(true), 1))


def vocab_from_manifest(path: str | os.PathLike) -> PhoneVocab:
    """The phones of a manifest's rows (those with "phones") as a vocabulary; for aligner inventories (see above)."""
    rows = [u.meta["phones"] for u in read_manifest(path) if u.meta.get("phones")]
    if not rows:
        raise AlignmentError(f"{path}: no rows with phones")
    return PhoneVocab.from_sequences([p[0] for p in phones] for phones in rows)


# -------------------------------------------------------------------------------------------------------- TextGrids

# Both Praat text formats reduce to the same stream of values once keys ("xmin =") and bracketed indices
# ("item [1]:") are skipped: quoted strings ("" escapes a quote), numbers and the <exists> flag.
_TOKEN = re.compile(r'\[\d*\]|"((?:[^"]|"")*)"|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(<exists>|<absent>)|(![^\n]*)')


def _tokens(text: str) -> list[str | float]:
    out: list[str | float] = []
    for m in _TOKEN.finditer(text):
        string, number, flag, _comment = m.groups()
        if string is not None:
            out.append(string.replace('""', '"'))
        elif number is not None:
            out.append(float(number))
        elif flag is not None:
            out.append(flag)
    return out


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Praat writes UTF-16 when a label needs it
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


class _Stream:
    def __init__(self, tokens: list[str | float], path: Path) -> None:
        self.tokens, self.pos, self.path = tokens, 0, path

    def take(self, kind: type) -> str | float:
        if self.pos >= len(self.tokens):
            raise AlignmentError(f"{self.path}: TextGrid ends early")
        value = self.tokens[self.pos]
        if not isinstance(value, kind):
            raise AlignmentError(f"{self.path}: expected a {kind.__name__} at value {self.pos}, got {value!r}")
        self.pos += 1
        return value

    def count(self) -> int:
        value = self.take(float)
        if value < 0 or value != int(value):
            raise AlignmentError(f"{self.path}: expected a count, got {value}")
        return int(value)


def _read_tier(stream: _Stream) -> tuple[str, Tier]:
    kind, name = stream.take(str), stream.take(str)
    stream.take(float), stream.take(float)  # the tier's xmin, xmax
    entries: Tier = []
    for _ in range(stream.count()):
        if kind == "IntervalTier":
            start, end, label = stream.take(float), stream.take(float), stream.take(str)
        elif kind == "TextTier":
            start = end = stream.take(float)
            label = stream.take(str)
        else:
            raise AlignmentError(f"{stream.path}: unknown tier class {kind!r}")
        entries.append((label, start, end))
    return name, entries


def read_textgrid(path: str | os.PathLike) -> dict[str, Tier]:
    """A Praat TextGrid (long or short text format, as MFA writes) -> {tier name: [(label, start, end), ...]}.

    Labels are stripped; empty labels (silence in MFA 2) are kept as "". Raises `AlignmentError` on anything else.
    """
    path = Path(path)
    try:
        text = _read_text(path)
    except OSError as e:
        raise AlignmentError(f"cannot read {path}: {e}") from e
    stream = _Stream(_tokens(text), path)
    file_type, object_class = stream.take(str), stream.take(str)
    if not str(file_type).startswith("ooTextFile") or object_class != "TextGrid":
        raise AlignmentError(f"{path}: not a text TextGrid (file type {file_type!r}, class {object_class!r})")
    stream.take(float), stream.take(float)  # xmin, xmax of the whole grid
    if stream.take(str) != "<exists>":
        return {}
    tiers: dict[str, Tier] = {}
    for _ in range(stream.count()):
        name, entries = _read_tier(stream)
        tiers[str(name)] = [(str(label).strip(), start, end) for label, start, end in entries]
    return tiers


def mfa_phones(textgrid: str | os.PathLike | Mapping[str, Tier], mapping: Mapping[str, str] | None = None,
               tier: str = "phones") -> list[tuple[str, float, float]]:
    """The phone tier of an MFA TextGrid as (symbol, start, end): silences ("", "sil", "sp") become "_".

    With `mapping` (e.g. `ARPABET_TO_ESPEAK`), a label is looked up as is ("AH0"), then without its stress digit
    ("AH"); labels it lacks (MFA's "spn" for a word it could not align) are kept, so the vocabulary encodes them as
    unknown and warns. Without a mapping MFA's inventory is kept (stress digits included).
    """
    grid = read_textgrid(textgrid) if isinstance(textgrid, str | os.PathLike) else textgrid
    if tier not in grid:
        raise AlignmentError(f"TextGrid has no tier {tier!r} (tiers: {sorted(grid)})")
    phones = [(_map_label(label, mapping), start, end) for label, start, end in grid[tier]]
    if not phones:
        raise AlignmentError(f"TextGrid tier {tier!r} is empty")
    return phones


def _map_label(label: str, mapping: Mapping[str, str] | None) -> str:
    if label.lower() in MFA_SILENCES:
        return SILENCE
    if mapping is None:
        return label
    return mapping.get(label, mapping.get(label.rstrip("012"), label))

