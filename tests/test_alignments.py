"""training.data.alignments: frame labels, durations (cumulative rounding), TextGrid parsing, ARPAbet mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.duration import cumulative_round, expand_durations
from model.text import UNK_ID, PhoneVocab
from training.data.alignments import (
    ARPABET_TO_ESPEAK,
    AlignmentError,
    durations_from_phones,
    frame_accuracy,
    mfa_phones,
    phones_to_frames,
    read_textgrid,
)

VOCAB = PhoneVocab.default()
PHONES = [("_", 0.0, 0.05), ("h", 0.05, 0.123), ("@", 0.123, 0.123), ("l", 0.123, 0.2), ("oU", 0.2, 0.4155),
          ("_:", 0.4155, 0.5)]

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.9
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 0.9
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.6
            text = "hello"
        intervals [3]:
            xmin = 0.6
            xmax = 0.9
            text = ""
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.9
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.2
            text = "HH"
        intervals [3]:
            xmin = 0.2
            xmax = 0.3
            text = "AH0"
        intervals [4]:
            xmin = 0.3
            xmax = 0.4
            text = "L"
        intervals [5]:
            xmin = 0.4
            xmax = 0.6
            text = "OW1"
        intervals [6]:
            xmin = 0.6
            xmax = 0.9
            text = "sil"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
0.9
<exists>
2
"IntervalTier"
"words"
0
0.9
3
0
0.1
""
0.1
0.6
"say ""hi"""
0.6
0.9
""
"IntervalTier"
"phones"
0
0.9
6
0
0.1
""
0.1
0.2
"HH"
0.2
0.3
"AH0"
0.3
0.4
"L"
0.4
0.6
"OW1"
0.6
0.9
"sil"
'''


def test_phones_to_frames_takes_the_phone_at_each_frame_centre() -> None:
    labels = phones_to_frames(PHONES, 60, VOCAB)
    assert labels.shape == (60,) and labels.dtype == np.int64
    ids = dict(zip(["_", "h", "@", "l", "oU", "_:"], VOCAB.encode(["_", "h", "@", "l", "oU", "_:"]), strict=True))
    # frame i is centred at i / 100 s: [0, 0.05) -> frames 0..4; [0.05, 0.123) -> 5..12; "@" spans no time
    assert (labels[:5] == ids["_"]).all() and (labels[5:13] == ids["h"]).all() and ids["@"] not in labels
    assert (labels[13:20] == ids["l"]).all() and (labels[20:42] == ids["oU"]).all()
    assert (labels[42:50] == ids["_:"]).all() and (labels[50:] == VOCAB.silence_id).all()  # after the last phone
    assert len(phones_to_frames(PHONES, 30, VOCAB)) == 30  # truncated to the frame count
    crop = phones_to_frames(PHONES, 20, VOCAB, start=0.1)  # a crop read from 0.1 s
    assert (crop == labels[10:30]).all()


def test_durations_preserve_the_total_and_match_the_frames() -> None:
    symbols, durations = durations_from_phones(PHONES)
    assert symbols == [p[0] for p in PHONES] and durations.tolist() == [5, 8, 0, 7, 22, 8]
    assert durations.sum() == 50  # the total of 0.5 s, exactly
    labels = phones_to_frames(PHONES, 50, VOCAB)
    assert (expand_durations(VOCAB.encode(symbols), durations) == labels).all()
    # float noise: 0.03 * 100 = 3.0000000000000004 must not push a boundary by a frame
    assert durations_from_phones([("a", 0.0, 0.03), ("b", 0.03, 0.07)])[1].tolist() == [3, 4]


def test_cumulative_rounding_keeps_totals_and_minimums() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 3, 1000)
    counts = cumulative_round(values)
    assert counts.sum() == round(values.sum()) and counts.min() >= 0
    assert np.abs(np.cumsum(counts) - np.cumsum(values)).max() <= 0.5  # no drift along the sequence
    assert (cumulative_round(1 + values)[:] >= 1).all()  # values >= 1 stay >= 1
    mixed = np.array([0.4, 5.0, 0.4, 7.0, 0.7])
    assert cumulative_round(mixed)[[1, 3]].tolist() == [5, 7]  # integers are kept exactly


def test_bad_phone_times_are_errors() -> None:
    with pytest.raises(AlignmentError):
        durations_from_phones([])
    with pytest.raises(AlignmentError):
        durations_from_phones([("a", 0.2, 0.1)])
    with pytest.raises(AlignmentError):
        phones_to_frames([("a", 0.0, 0.3), ("b", 0.1, 0.4)], 40, VOCAB)


@pytest.mark.parametrize("text", [LONG, SHORT], ids=["long", "short"])
def test_read_textgrid_long_and_short(tmp_path: Path, text: str) -> None:
    path = tmp_path / "utt.TextGrid"
    path.write_text(text)
    grid = read_textgrid(path)
    assert list(grid) == ["words", "phones"]
    assert grid["phones"] == [("", 0.0, 0.1), ("HH", 0.1, 0.2), ("AH0", 0.2, 0.3), ("L", 0.3, 0.4),
                              ("OW1", 0.4, 0.6), ("sil", 0.6, 0.9)]
    assert grid["words"][1][0] == ("hello" if text is LONG else 'say "hi"')


def test_read_textgrid_utf16_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "utf16.TextGrid"
    path.write_text(SHORT, encoding="utf-16")
    assert read_textgrid(path)["phones"][1] == ("HH", 0.1, 0.2)
    bad = tmp_path / "bad.TextGrid"
    bad.write_text('File type = "ooTextFile"\nObject class = "Sound"\n')
    with pytest.raises(AlignmentError, match="not a text TextGrid"):
        read_textgrid(bad)
    bad.write_text(SHORT[: SHORT.index('"AH0"')])
    with pytest.raises(AlignmentError, match="ends early"):
        read_textgrid(bad)
    with pytest.raises(AlignmentError, match="cannot read"):
        read_textgrid(tmp_path / "missing.TextGrid")


def test_mfa_phones_mapped_onto_espeak_or_kept(tmp_path: Path) -> None:
    path = tmp_path / "utt.TextGrid"
    path.write_text(LONG)
    mapped = mfa_phones(path, ARPABET_TO_ESPEAK)
    assert [p[0] for p in mapped] == ["_", "h", "@", "l", "oU", "_"]  # AH0 -> schwa; silences -> "_"
    assert all(p[0] in VOCAB for p in mapped)
    kept = mfa_phones(read_textgrid(path))
    assert [p[0] for p in kept] == ["_", "HH", "AH0", "L", "OW1", "_"]
    assert mfa_phones({"phones": [("AH1", 0, 1), ("spn", 1, 2)]}, ARPABET_TO_ESPEAK) == [("V", 0, 1), ("spn", 1, 2)]
    with pytest.warns(UserWarning, match="spn"):
        assert VOCAB.encode(["spn"]) == [UNK_ID]
    with pytest.raises(AlignmentError, match="no tier"):
        mfa_phones(path, tier="syllables")
    # every ARPAbet phone maps to a symbol of the espeak inventory
    assert set(ARPABET_TO_ESPEAK.values()) <= set(VOCAB.symbols)
    durations = durations_from_phones(mapped)[1]
    assert durations.tolist() == [10, 10, 10, 10, 20, 30]


def test_frame_accuracy() -> None:
    assert frame_accuracy(np.array([1, 2, 3, 3]), np.array([1, 2, 2, 3])) == 0.75
    assert frame_accuracy(np.array([1, 2]), np.array([1, 2, 2, 2])) == 0.5  # missing frames count as wrong
