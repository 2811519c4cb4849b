"""model.text: normalisation, unvoiceable characters, sentence splitting, the phone vocabulary, text -> phones."""

from __future__ import annotations

import re
import warnings

import pytest

from model import espeak
from model.errors import SpeechFlowError
from model.text import (
    DEFAULT_INVENTORY,
    PAD,
    PAD_ID,
    SILENCE,
    UNK,
    UNK_ID,
    PhoneVocab,
    TextError,
    normalize_text,
    split_sentences,
    text_to_phones,
)

KEPT = "Paid $5.50 to Dr. Smith; 20\u00b0 \u00a9 5 \u00b5m caf\u00e9!"  # left to espeak's own rules


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Hello\t\n  world  ", "Hello world"),
        ("It\u2019s \u201cquoted\u201d", "It's quoted"),
        ('He said "hi".', "He said hi."),
        ("Wait\u2014what? Yes \u2013 no", "Wait, what? Yes, no"),
        ("x -- y", "x, y"),
        ("From 1990\u20132000.", "From 1990-2000."),
        ("Well\u2026 ok", "Well... ok"),
        ("Wait , what ?", "Wait, what?"),
        ("\uff28\uff49 there", "Hi there"),  # full-width letters
        ("zero\u200bwidth\u00a0space", "zerowidth space"),
        (KEPT, KEPT),
    ],
)
def test_normalize_text(raw: str, clean: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these drops a character
        assert normalize_text(raw) == clean
    assert normalize_text(clean) == clean  # idempotent


def test_emoji_and_control_characters_are_dropped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="GRINNING FACE") as record:
        assert normalize_text("Hello \U0001f600 world\x07! \U0001f44d\U0001f3fd") == "Hello world!"
    message = str(record[0].message)
    assert "U+0007" in message and "THUMBS UP SIGN" in message


def test_other_scripts_are_dropped_per_script() -> None:
    with pytest.warns(UserWarning, match="6 CYRILLIC letters, 2 CJK letters"):
        assert normalize_text("\u041f\u0440\u0438\u0432\u0435\u0442, world \u4f60\u597d!") == "world!"


@pytest.mark.parametrize("raw", ["", "   \n\t ", "\U0001f600\U0001f600", "...", "\u2014"])
def test_nothing_to_say_is_a_text_error(raw: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TextError) as info:
            normalize_text(raw)
    assert isinstance(info.value, SpeechFlowError) and isinstance(info.value, ValueError)


def test_not_a_string_and_too_long_are_text_errors() -> None:
    with pytest.raises(TextError, match="string"):
        normalize_text(42)  # type: ignore[arg-type]
    with pytest.raises(TextError, match="limit is 10"):
        normalize_text("This sentence is far too long.", max_chars=10)
    assert normalize_text("Short.", max_chars=10) == "Short."


def test_ten_thousand_characters_split_into_sentences_under_the_limit() -> None:
    sentence = "The quick brown fox, who was rather tired, jumps over Dr. Lazy's dog! Is it U.S. policy? Yes. "
    giant = "Antidisestablishmentarianism" * 12  # a 336-character "word"
    text = (sentence * 120)[:9600] + " " + giant + ". And then, " + "on and on " * 60 + "it ended."
    assert len(text) >= 10_000
    chunks = split_sentences(text, max_chars=120)
    assert all(0 < len(c) <= 120 for c in chunks)
    # every word kept, in order (the giant word hard-cut into pieces)
    assert "".join(" ".join(chunks).split()) == "".join(normalize_text(text).split())
    assert giant[:120] in chunks
    assert "Is it U.S. policy?" in chunks and "Yes." in chunks  # sentences, abbreviations not taken as ends
    assert any(c.startswith("The quick brown fox") and c.endswith("dog!") for c in chunks)


def test_split_at_clauses_then_words_and_paragraphs() -> None:
    long = "one two three four, five six seven eight; nine ten eleven twelve thirteen fourteen"
    assert split_sentences(long, max_chars=41) == ["one two three four, five six seven eight;",
                                                    "nine ten eleven twelve thirteen fourteen"]
    assert split_sentences("A title\n\nand a line", 50) == ["A title", "and a line"]
    assert split_sentences("He said 'hi.' Then (he left.) 5 are here.", 50) == ["He said 'hi.'", "Then (he left.)",
                                                                                "5 are here."]
    with pytest.raises(TextError):
        split_sentences("  \n\n ", 50)
    with pytest.raises(TextError):
        split_sentences("Hello.", 0)


def test_vocab_round_trip_and_unknown_symbols() -> None:
    vocab = PhoneVocab.default()
    assert vocab.symbols[:2] == [PAD, UNK] and (PAD_ID, UNK_ID) == (0, 1)
    assert len(vocab) == len(DEFAULT_INVENTORY) + 2 and vocab.symbols[vocab.silence_id] == SILENCE
    symbols = ["_", "h", "@", "l", "oU", "_:"]
    assert vocab.decode(vocab.encode(symbols)) == symbols
    assert PhoneVocab(vocab.to_list()) == vocab  # what a checkpoint config stores rebuilds the same ids
    with pytest.warns(UserWarning, match="XX"):
        assert vocab.encode(["h", "XX", "XX"]) == [vocab.encode(["h"])[0], UNK_ID, UNK_ID]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vocab.encode(["XX"])  # warned once per symbol
    assert vocab.is_pause(vocab.silence_id) and not vocab.is_pause(vocab.encode(["h"])[0])


def test_vocab_from_data_and_invalid_lists() -> None:
    vocab = PhoneVocab.from_sequences([["HH", "AH0", "L"], ["OW1", "HH"]])
    assert vocab.symbols == [PAD, UNK, SILENCE, "AH0", "HH", "L", "OW1"]
    for bad in (["a", "b"], [PAD, UNK, "_", "_"], [PAD, UNK, "a"], [PAD, UNK, "_", ""]):
        with pytest.raises(TextError):
            PhoneVocab(bad)


def test_text_to_phones_matches_espeak_and_the_inventory() -> None:
    try:
        espeak.initialize()
    except espeak.EspeakError as e:
        pytest.skip(f"libespeak-ng unavailable: {e}")
    text = "Dr. Smith paid $5.50 \u2014 on 12/05/2021, at 10:30!"
    phones = text_to_phones(text)
    assert phones == espeak.phonemize(normalize_text(text))
    assert set(phones) <= set(DEFAULT_INVENTORY)
    assert phones[0] == SILENCE and "_:" in phones and not any(re.match(r"^\(.*\)$", p) for p in phones)
    with pytest.raises(TextError):
        text_to_phones("   ")
