"""Transcripts in other languages as phones of the English phone vocabulary, so that real speakers of any language
can teach the TTS model real voices.

The TTS model's phone vocabulary is espeak-ng's English (`model.text`), and the only English real speaker here is
held out for testing; the real training speakers speak French, Italian and Russian. espeak-ng phonemises their
transcripts in their own language; each symbol that English also has is kept, and each other one becomes the
nearest English phone (or two: an affricate or a palatal glide), by articulation: French nasal vowels lose their
nasality, front rounded vowels become their unrounded or back neighbours, Russian palatalisation marks are dropped,
taps and uvular r become English r. The labels are approximate by design: what the model should take from these
recordings is the sound of real voices in context, not a foreign phone inventory, and the forced aligner places
the approximate phones on the audio (`training.data.labelling`).
"""

from __future__ import annotations

import re

from model import espeak
from model.text import PhoneVocab

# espeak-ng mnemonics of fr / it / ru / es that English lacks -> English ones (checked on the Asterisk transcripts)
NEAREST: dict[str, tuple[str, ...]] = {
    "e": ("eI",), "e-": ("eI",), "o": ("oU",), "u": ("u:",), "A": ("A:",), "a-": ("a",),
    "y": ("u:",), "y-": ("u:",), "Y": ("3:",), "W": ("3:",), "W~": ("3:",),
    "A~": ("A:",), "O~": ("O:",), "E~": ("E",), "E#": ("E",), "E2": ("E",),
    "I3": ("I",), "I^": ("I",), "8": ("u:",), 'u"': ("u:",),
    "R": ("r",), "*": ("r",), "x": ("h",), "z2": ("z",), "ss": ("s",), "l^": ("l", "j"), "n^": ("n", "j"),
    "n_": ("n",), "d[": ("d",), "w2": ("w",),
    "ts": ("t", "s"), "ts2": ("t", "s"), "dz": ("d", "z"), "ja": ("j", "a"), "ju": ("j", "u:"),
}
LANGUAGE_SWITCH = re.compile(r"^\([a-z-]+\)$")  # espeak's "(en)" / "(fr)" markers around a borrowed word
VOICES = {"fr": "fr", "it": "it", "ru": "ru", "es": "es", "de": "de", "pt": "pt"}  # language subtag -> espeak voice


def primary_language(tag: str) -> str:
    """A BCP 47 language tag's primary subtag, lower-cased ("fr-CA" -> "fr")."""
    return tag.split("-")[0].lower()


def espeak_voice(language: str) -> str:
    """The espeak-ng voice for a BCP 47 language tag ("fr-CA" -> "fr"); English tags give "en-us"."""
    primary = primary_language(language)
    if primary == "en":
        return "en-us"
    if primary not in VOICES:
        raise ValueError(f"no espeak-ng voice is set up for language {language!r}; known: {sorted(VOICES)}")
    return VOICES[primary]


def to_english(symbols: list[str], vocab: PhoneVocab) -> list[str]:
    """espeak-ng symbols of any language -> symbols of ``vocab`` (English): kept, mapped by `NEAREST`, or with their
    modifier marks (palatalisation ";", length, stress variants) stripped; language switches dropped."""
    known = set(vocab.to_list())
    out: list[str] = []
    for symbol in symbols:
        if LANGUAGE_SWITCH.match(symbol):
            continue
        if symbol in known:
            out.append(symbol)
        elif symbol in NEAREST:
            out.extend(NEAREST[symbol])
        else:
            bare = symbol.rstrip(";:-^#23\"")
            out.extend((bare,) if bare in known else NEAREST.get(bare, (bare,) if bare else ()))
    return out


def foreign_phones(text: str, language: str, vocab: PhoneVocab | None = None) -> list[str]:
    """``text`` in ``language`` -> its phones in the English vocabulary (pauses included, as `model.text` gives)."""
    vocab = vocab or PhoneVocab.default()
    return to_english(espeak.phonemize(" ".join(text.split()), espeak_voice(language)), vocab)
