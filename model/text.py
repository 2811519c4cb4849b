"""Text frontend for TTS: raw text -> normalised text -> espeak-ng phones -> ids of a fixed phone vocabulary.

Normalisation is deliberately light. Numbers, abbreviations, currency and accented Latin letters are left to
espeak-ng's own rules ("$5.50", "Dr.", "café" come out right); what we do is what espeak gets wrong or what our
phone vocabulary cannot hold:
- whitespace of every kind becomes one space; typographic quotes, dashes and ellipses become the ASCII forms espeak
  reads as pauses (an em dash is a comma pause); double quotes are removed (espeak turns each into two clause pauses,
  which nobody reads aloud, and the corpus sentences never contain one);
- characters that cannot be voiced are dropped with a warning naming them, never a crash: Unicode categories Cc
  (control, other than whitespace), Cs (surrogates), Co (private use), Cn (unassigned) and So (emoji, dingbats,
  arrows; a few symbols espeak reads as words, like "°" and "©", are kept), emoji modifiers, and letters of scripts
  other than Latin: espeak's English voices spell those letter by letter ("Chinese letter Chinese letter") or switch
  to another language's phonemes, which the English phone vocabulary has no embeddings for. Invisible format
  characters (zero-width spaces and joiners, variation selectors) are dropped silently.

Phones are `model.espeak.phonemize`'s: the very symbols the corpus alignments carry (espeak's mnemonics without stress,
pauses "_", "_:", "_!", "_|"). `PhoneVocab` fixes their ids and travels in checkpoint configs as a list of strings.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence

from . import espeak
from .errors import SpeechFlowError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
SILENCE = "_"  # espeak's short pause; also what MFA's silences and the frames after the last phone map to
PAUSES = ("_", "_:", "_!", "_|")
MAX_CHUNK_CHARS = 200  # about 12 s of speech: one chunk (TTS row) of long text

# Every symbol espeak-ng's English accents produced for 1,500 Debian fortunes plus numbers, dates, e-mail addresses
# and accented words, in each of the corpus accents (en-us, en-gb, en-gb-scotland, en-029, en-gb-x-rp, en-us-nyc,
# en-gb-x-gbcwmd, en-gb-x-gbclan): 77 symbols, the same set as from 250 sentences. Pauses first, then sorted.
DEFAULT_INVENTORY: tuple[str, ...] = (
    "_", "_:", "_!", "_|",
    "0", "3", "3:", ";", "?", "@", "@-", "@2", "@5", "@L", "A:", "A@", "D", "E", "I", "I#", "I2", "IR", "N", "O",
    "O2", "O:", "O@", "OI", "S", "T", "U", "U@", "V", "VR", "Z", "a", "a#", "aI", "aI2", "aI3", "aI@", "aU", "aa",
    "b", "d", "dZ", "e@", "eI", "f", "g", "h", "i", "i:", "i@", "i@3", "j", "k", "l", "m", "n", "n-", "o@", "oU",
    "p", "r", "r-", "s", "t", "t#", "t2", "tS", "t[", "u:", "v", "w", "w#", "z",
)  # fmt: skip

# Typographic forms -> what espeak reads as intended. Double quotes go (see the module docstring).
_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": None, "\u201d": None, "\u201e": None, "\u201f": None, "\u00ab": None, "\u00bb": None, '"': None,
    "\u2033": None, "\u2026": "...", "\u2212": "-", "\u2010": "-", "\u2011": "-",
})  # fmt: skip
_DASHES = "\u2012\u2013\u2014\u2015"  # figure, en, em dash, horizontal bar
# So characters espeak reads as a word that belongs in the sentence ("20°" -> "twenty degrees").
_VOICED_SYMBOLS = frozenset("°©®™℃℉№℗µ")  # (µ is a Greek letter to Unicode, "micro" to espeak)
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "So"})
_SILENT_CATEGORIES = frozenset({"Cf"})  # zero-width space/joiner, BOM, soft hyphen, tags: invisible
# after . ! ? (and a closing quote or bracket), before a capital or digit (and an opening quote or bracket)
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][')\]]))\s+(?=['(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs|etc|No|Inc|Ltd|Co|Gen|Col|Capt|Lt|Sgt|Rev|"
                           r"Fig|approx|e\.g|i\.e)|\b[A-Z])\.$")
_CAPTION_PUNCTUATION = ".,;:!?()[]{}'"  # stripped from a caption word's ends ("world," -> "world")
_LANGUAGE_SWITCH = re.compile(r"^\(.+\)$")  # espeak marks a switch to another language's phonemes as "(ko)"


class TextError(SpeechFlowError, ValueError):
    """Text that cannot be spoken: not a string, empty once unvoiceable characters are gone, or too long."""


# ---------------------------------------------------------------------------------------------------- normalisation


def _is_silent(ch: str) -> bool:
    code = ord(ch)
    return unicodedata.category(ch) in _SILENT_CATEGORIES or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF


def _cannot_voice(ch: str) -> bool:
    category = unicodedata.category(ch)
    if ch in _VOICED_SYMBOLS or ch.isspace():
        return False
    if category in _DROPPED_CATEGORIES or 0x1F3FB <= ord(ch) <= 0x1F3FF:  # the latter: emoji skin tones (Sk)
        return True
    if category[0] in "LM":  # letters and combining marks: Latin only (see the module docstring)
        return not unicodedata.name(ch, "").startswith(("LATIN", "COMBINING", "MODIFIER LETTER"))
    return False


def _describe(chars: Iterable[str]) -> str:
    """Name dropped characters; letters of other scripts are counted per script (a Cyrillic word is one item)."""
    symbols: dict[str, None] = {}
    scripts: dict[str, int] = {}
    for ch in chars:
        if unicodedata.category(ch)[0] in "LM":
            script = unicodedata.name(ch, "UNKNOWN").split()[0]
            scripts[script] = scripts.get(script, 0) + 1
        else:
            symbols[ch] = None
    names = [f"{ch!r} ({unicodedata.name(ch, f'U+{ord(ch):04X}')})" for ch in list(symbols)[:8]]
    names += [f"{len(symbols) - 8} more symbols"] if len(symbols) > 8 else []
    names += [f"{n} {script} letter{'s' * (n > 1)}" for script, n in scripts.items()]
    return ", ".join(names)


def _dashes(text: str) -> str:
    """A dash between digits is a range ("1990–2000"), anywhere else a clause break, which espeak reads at a comma."""
    text = re.sub(rf"(?<=\d)[{_DASHES}](?=\d)", "-", text)
    text = re.sub(rf"\s*(?:[{_DASHES}]|(?<!-)--(?!-))\s*", ", ", text)
    return re.sub(r"\s*,(?:\s*,)+", ",", text)  # "a, — b" must not become two commas


def normalize_text(text: str, max_chars: int | None = None) -> str:
    """Clean text for espeak-ng (see the module docstring); idempotent.

    Unvoiceable characters are dropped with a `UserWarning` naming them. Raises `TextError` when the text is not a
    string, nothing speakable is left, or the result is longer than `max_chars`.
    """
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    text = "".join(chr(ord(ch) - 0xFEE0) if 0xFF01 <= ord(ch) <= 0xFF5E else ch for ch in text)  # full-width ASCII
    text = text.translate(_TRANSLATE)
    text = "".join(ch for ch in text if not _is_silent(ch))
    dropped = [ch for ch in text if _cannot_voice(ch)]
    if dropped:
        warnings.warn(f"dropped characters that cannot be spoken: {_describe(dropped)}", UserWarning, stacklevel=2)
        text = "".join(" " if _cannot_voice(ch) else ch for ch in text)
    text = _dashes(" ".join(text.split()))
    text = re.sub(r"\s+([,;:.!?])", r"\1", text).strip(" ,")  # "word ," -> "word,"; no leading clause break
    if not any(ch.isalnum() for ch in text):
        raise TextError("text is empty or has nothing to speak" + (f" once {_describe(dropped)} were dropped"
                                                                   if dropped else ""))
    if max_chars is not None and len(text) > max_chars:
        raise TextError(f"text is {len(text)} characters, the limit is {max_chars}: split it (split_sentences)")
    return text


def text_to_phones(text: str, voice: str = "en-us", max_chars: int | None = None) -> list[str]:
    """Normalise and phonemize: the espeak phone symbols (pauses included) the TTS model is conditioned on."""
    clean = normalize_text(text, max_chars)
    try:
        phones = espeak.phonemize(clean, voice)
    except espeak.EspeakTextError as e:
        raise TextError(str(e)) from e
    return [p for p in phones if not _LANGUAGE_SWITCH.match(p)]


def text_to_phone_words(text: str, voice: str = "en-us",
                        max_chars: int | None = None) -> tuple[list[str], list[tuple[str, int, int]]]:
    """`text_to_phones`' phones and the words of the normalised text as (word, first phone, end phone) spans.

    A word is a whitespace-separated token of the normalised text, its leading and trailing punctuation stripped
    for display; it owns the non-pause phones espeak voiced for the word events that start inside it ("$5.50" is
    several espeak words, one caption word; bare punctuation is none). The span runs from its first to its last
    own phone, so pauses between words belong to no word. espeak voices some unstressed words together with the
    word before them under one event ("on the" -> ɔnðə): such a token takes the tail of that span, as many phones
    as it has alone (`_lend_merged`); a token espeak voiced nothing for has no span.
    """
    clean = normalize_text(text, max_chars)
    try:
        phones, owners = espeak.phonemize_words(clean, voice)
    except espeak.EspeakTextError as e:
        raise TextError(str(e)) from e
    kept = [i for i, p in enumerate(phones) if not _LANGUAGE_SWITCH.match(p)]
    phones, owners = [phones[i] for i in kept], [owners[i] for i in kept]
    # a token of bare punctuation ("-") is no word: espeak reports the next word's phones under its event
    tokens = [(m.start(), m.end()) for m in re.finditer(r"\S+", clean)
              if m.group().strip(_CAPTION_PUNCTUATION + "-")]
    spans: dict[int, list[int]] = {}  # token index -> [first phone, end phone]
    for i, owner in enumerate(owners):
        token = next((t for t, (_, b) in enumerate(tokens) if owner < b), None) if owner >= 0 else None
        if token is not None:
            spans.setdefault(token, [i, i + 1])[1] = i + 1
    _lend_merged(spans, [clean[a:b] for a, b in tokens], voice)
    words = []
    for token, (first, end) in sorted(spans.items()):
        a, b = tokens[token]
        word = clean[a:b].strip(_CAPTION_PUNCTUATION) or clean[a:b]
        words.append((word, first, end))
    return phones, words


def _lend_merged(spans: dict[int, list[int]], tokens: list[str], voice: str) -> None:
    """Give each run of tokens without phones, after a token with them, the tail of that token's span: as many
    phones as the token has voiced alone, while the owner keeps at least one (in place)."""
    for host in sorted(spans):
        first, end = spans[host]
        run = list(itertools.takewhile(lambda t: t not in spans, range(host + 1, len(tokens))))
        for token in reversed(run):
            take = min(_voiced_phones(tokens[token], voice), end - 1 - first)
            if take <= 0:
                break
            spans[token] = [end - take, end]
            end -= take
        spans[host][1] = end


@functools.lru_cache(maxsize=4096)  # the tokens that need it are few and recur ("the", "a", "to")
def _voiced_phones(token: str, voice: str) -> int:
    """How many non-pause phones espeak-ng voices for ``token`` alone (0: none, e.g. a symbol it does not speak)."""
    try:
        return sum(1 for p in espeak.phonemize(token, voice) if not espeak.is_pause(p))
    except espeak.EspeakTextError:
        return 0


# -------------------------------------------------------------------------------------------------------- splitting


def _sentences(paragraph: str) -> list[str]:
    """Split after . ! ? followed by a capital or digit, but not after an abbreviation or an initial ("Dr. Who")."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(paragraph):
        if _ABBREVIATION.search(paragraph[start : m.start()]):
            continue
        out.append(paragraph[start : m.start()].strip())
        start = m.end()
    out.append(paragraph[start:].strip())
    return [s for s in out if s]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Join consecutive pieces with spaces while the result stays within max_chars."""
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] += " " + piece
        else:
            chunks.append(piece)
    return chunks


def _fit(sentence: str, max_chars: int) -> list[str]:
    """One sentence -> chunks <= max_chars: whole, else at clause punctuation, else between words, else hard cuts."""
    if len(sentence) <= max_chars:
        return [sentence]
    clauses = [c for c in re.split(r"(?<=[,;:])\s+", sentence) if c]
    if len(clauses) > 1:
        return [chunk for clause in _pack(clauses, max_chars) for chunk in _fit(clause, max_chars)]
    words = [w[i : i + max_chars] for w in sentence.split() for i in range(0, len(w), max_chars)]
    return _pack(words, max_chars)


def split_sentences(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Long text -> normalised chunks of at most `max_chars`, one per sentence (blank lines end sentences too);
    a longer sentence is cut at commas / semicolons / colons, then between words, a longer word hard.

    Every word of the normalised text is in exactly one chunk, in order. Raises `TextError` when nothing is left.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise TextError(f"max_chars must be a positive integer, got {max_chars!r}")
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    chunks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        try:
            clean = normalize_text(paragraph)
        except TextError:
            continue  # a paragraph of emoji alone: its warning is out, the others may still speak
        chunks += [chunk for sentence in _sentences(clean) for chunk in _fit(sentence, max_chars)]
    if not chunks:
        raise TextError("text is empty or has nothing to speak")
    return chunks


# ------------------------------------------------------------------------------------------------------- vocabulary


class PhoneVocab:
    """A fixed list of phone symbols: id 0 = padding, 1 = unknown, then the phones (the silence "_" always there).

    Stored in checkpoint configs as `symbols` (a plain list of strings, specials included), so a model always encodes
    with the ids it was trained with.
    """

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        if symbols[:2] != [PAD, UNK]:
            raise TextError(f"a phone vocabulary starts with {PAD!r}, {UNK!r}; got {symbols[:2]}")
        if not all(isinstance(s, str) and s for s in symbols):
            raise TextError("phone symbols must be non-empty strings")
        if len(set(symbols)) != len(symbols):
            raise TextError("phone vocabulary has duplicate symbols")
        if SILENCE not in symbols:
            raise TextError(f"phone vocabulary lacks the silence symbol {SILENCE!r}")
        self.symbols = symbols
        self._ids = {s: i for i, s in enumerate(symbols)}
        self._warned: set[str] = set()

    @classmethod
    def build(cls, phones: Iterable[str]) -> PhoneVocab:
        """From any phone symbols (duplicates fine): specials, pauses, then the rest sorted."""
        found = set(phones) - {PAD, UNK}
        pauses = [p for p in PAUSES if p in found or p == SILENCE]
        return cls([PAD, UNK, *pauses, *sorted(found - set(pauses))])

    @classmethod
    def default(cls) -> PhoneVocab:
        """espeak-ng's English inventory (`DEFAULT_INVENTORY`): what checkpoints trained on the corpus use."""
        return cls.build(DEFAULT_INVENTORY)

    @classmethod
    def from_sequences(cls, sequences: Iterable[Iterable[str]]) -> PhoneVocab:
        """From the phones of a data set (e.g. a forced aligner's inventory)."""
        return cls.build(p for seq in sequences for p in seq)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhoneVocab) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"PhoneVocab({len(self)} symbols)"

    @property
    def silence_id(self) -> int:
        return self._ids[SILENCE]

    def is_pause(self, index: int) -> bool:
        return self.symbols[index] in PAUSES

    def encode(self, symbols: Iterable[str]) -> list[int]:
        """Symbols -> ids; an unknown symbol is id 1, with a warning the first time this vocabulary meets it."""
        symbols = list(symbols)
        ids = [self._ids.get(s, UNK_ID) for s in symbols]
        new = {s for s, i in zip(symbols, ids, strict=True) if i == UNK_ID} - self._warned - {UNK}
        if new:
            self._warned |= new
            warnings.warn(f"phones not in the vocabulary, encoded as {UNK!r}: {sorted(new)}", UserWarning,
                          stacklevel=2)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.symbols[int(i)] for i in ids]

    def to_list(self) -> list[str]:
        return list(self.symbols)
