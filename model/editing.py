"""Speech editing: change the words of a recording and regenerate only what changed, in the recording's voice.

An edit is planned in three steps, all on the host and without the flow model:
1. `find_changes`: the recording's transcript and the new text, both as espeak-ng phones with word spans, are
   compared word by word (case and punctuation ignored); each run of differing words is a `Change` of a phone range.
2. `layout_edit`: the edited recording as frames (`Layout`): the original's frames of every phone outside the
   changes, kept as they were, and the new phones' frames, as many as the duration model gives them in the context
   of every kept phone's aligned duration (so the speaker's rate carries over), plus a margin of the kept frames on
   each side, regenerated too so that the new audio grows out of the old.
3. `splice`: the regenerated runs, vocoded and resampled, put back into the original waveform at its own rate: the
   samples of the kept frames outside the margins are the upload's own, bit for bit, and each margin cross-fades
   from the original into the regenerated audio.
Infilling a time span is the same layout without new phones (`span_layout`), so both share the splice.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .aligner import PromptAligner
from .audio import prepare_waveform, resample
from .defaults import Sampling
from .duration import PLAUSIBLE_LENGTH, DurationModel, context_free_frames, rescaled_prompt_durations
from .errors import ConfigError, SettingError
from .generation import Plan, Row
from .recognizer import normalize_transcript
from .stages import stage
from .text import PhoneVocab, TextError, text_to_phone_words

MARGIN_S = 0.1  # kept audio regenerated around each change, so the new words join the old smoothly
FADE_S = 0.02  # the cross-fade from the original into the regenerated audio, inside the margin
MAX_EDIT_S = 10.0  # audio regenerated per edit, margins included: an edit is a few words, not a new recording
MAX_EDIT_TEXT_CHARS = 1000  # the transcript and the new text each
CONTEXT_S = 4.0  # the recording around a regenerated run that its generation row sees (the voice, the words)
MAX_ROWS_S = 30.0  # frames an edit's or an infill's rows may hold in all: its work is bounded whatever the spacing
SILENCE_DB = 45.0  # `speech_frames`: quieter than the loudest frame by this much is silence
VOCODER_CONTEXT = 16  # frames vocoded on each side of a regenerated run, then cut off

Words = Sequence[tuple[str, int, int]]  # (word, first phone, end phone), as `model.text.text_to_phone_words` gives


@dataclass(frozen=True)
class Change:
    """One run of differing words: the transcript's phones ``old`` [first, end) become the new text's ``new``."""

    old: tuple[int, int]
    new: tuple[int, int]
    before: str  # the words replaced ("" for an insertion)
    after: str  # the words put in their place ("" for a deletion)


@dataclass
class Layout:
    """The edited recording as frames. ``source`` (T,) int64: the original frame a kept frame is, -1 for a new one;
    ``generate`` (T,) bool: the frames to regenerate (new ones and margins); ``labels`` (T,) int64: each frame's
    phone id (TTS edits; None for infilling with the pre-trained model)."""

    source: np.ndarray
    generate: np.ndarray
    labels: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return len(self.source)

    def runs(self) -> list[tuple[int, int, bool]]:
        """(first, end, regenerated) of each run of frames kept or regenerated alike, in order."""
        edges = np.flatnonzero(np.diff(self.generate.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), self.frames]
        return [(a, b, bool(self.generate[a])) for a, b in itertools.pairwise(bounds)]


def find_changes(old_words: Words, new_words: Words, new_phones: int) -> list[Change]:
    """The runs of words that differ between the transcript and the new text (compared as WER compares words).

    An insertion goes before the transcript's next word (after the last one at the end); ``new_phones`` is the new
    text's phone count. Raises SettingError (``text``) when nothing differs."""
    def key(words: Words) -> list[str]:
        return [normalize_transcript(w) for w, _, _ in words]

    def phone_range(words: Words, i: int, j: int, end_of_text: int) -> tuple[int, int]:
        if j > i:
            return words[i][1], words[j - 1][2]
        at = words[i][1] if i < len(words) else (words[-1][2] if words else end_of_text)
        return at, at

    matcher = difflib.SequenceMatcher(a=key(old_words), b=key(new_words), autojunk=False)
    changes = [Change(phone_range(old_words, i1, i2, 0), phone_range(new_words, j1, j2, new_phones),
                      " ".join(w for w, _, _ in old_words[i1:i2]), " ".join(w for w, _, _ in new_words[j1:j2]))
               for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]
    if not changes:
        raise SettingError("text says what the recording already says: nothing to edit", param="text")
    return changes


def replace_words(transcript: str, old: str, new: str) -> str:
    """``transcript`` with its first run of words ``old`` (compared as `find_changes` compares words) replaced by
    ``new``; the punctuation after the last replaced word is kept. SettingError (``from``) if there is none."""
    tokens = transcript.split()
    keys, wanted = [normalize_transcript(t) for t in tokens], normalize_transcript(old).split()
    at = next((i for i in range(len(keys) - len(wanted) + 1) if wanted and keys[i: i + len(wanted)] == wanted), None)
    if at is None:
        raise SettingError(f"the transcript {transcript!r} has no words {old!r} to replace", param="from")
    last = tokens[at + len(wanted) - 1]
    tail = last[len(last.rstrip(".,;:!?\"')")):]
    replacement = new.split()
    if replacement:
        replacement[-1] += tail
    return " ".join([*tokens[:at], *replacement, *tokens[at + len(wanted):]])


def edited_sequence(old_symbols: Sequence[str], new_symbols: Sequence[str],
                    changes: Sequence[Change]) -> tuple[list[str], np.ndarray]:
    """The edited phones and, per phone, the transcript phone it keeps ((N',) int64; -1 for a new phone)."""
    symbols: list[str] = []
    kept: list[int] = []
    at = 0
    for change in changes:
        (a, b), (c, d) = change.old, change.new
        symbols += [*old_symbols[at:a], *new_symbols[c:d]]
        kept += [*range(at, a), *[-1] * (d - c)]
        at = b
    symbols += old_symbols[at:]
    kept += range(at, len(old_symbols))
    return symbols, np.asarray(kept, dtype=np.int64)


def layout_edit(kept: np.ndarray, durations: np.ndarray, old_durations: np.ndarray, labels: np.ndarray,
                margin: int) -> Layout:
    """The frames of an edited phone sequence: ``kept`` (N',) as `edited_sequence` gives it, ``durations`` (N',)
    frames per phone (a kept phone's must be its aligned ``old_durations`` entry), ``labels`` (N',) phone ids; every
    new frame and ``margin`` frames on each side of each change are regenerated."""
    if not np.array_equal(durations[kept >= 0], old_durations[kept[kept >= 0]]):
        raise ConfigError("a kept phone must keep its aligned duration")
    edges = np.concatenate([[0], np.cumsum(old_durations)])
    source = np.concatenate([np.arange(edges[k], edges[k + 1]) if k >= 0 else np.full(n, -1)
                             for k, n in zip(kept.tolist(), durations.tolist(), strict=True)]).astype(np.int64)
    generate = source < 0
    # a change's boundary: where new frames start or end, or the kept frames jump (a deletion)
    jump = (source[1:] < 0) != (source[:-1] < 0)
    jump |= (source[1:] >= 0) & (source[:-1] >= 0) & (source[1:] != source[:-1] + 1)
    for f in np.flatnonzero(jump) + 1:
        generate[max(0, f - margin): f + margin] = True
    return Layout(source, generate, np.repeat(labels, durations))


def span_layout(generate: np.ndarray) -> Layout:
    """Infilling: every frame is the original's, those marked (T,) bool regenerated."""
    return Layout(np.arange(len(generate), dtype=np.int64), generate.copy())


class FrameClock:
    """Where a frame starts in samples at any rate: frame f of the model's features starts at f x hop samples of
    the model's rate, i.e. round(f x hop x sr / model_sr) at ``sr``."""

    def __init__(self, hop: int, model_sr: int, sr: int) -> None:
        self.hop, self.model_sr, self.sr = hop, model_sr, sr

    def __call__(self, frame: int) -> int:
        return round(frame * self.hop * self.sr / self.model_sr)


def regenerated_audio(layout: Layout, vocoded: Sequence[np.ndarray], windows: Sequence[tuple[int, int]],
                      clock: FrameClock) -> list[np.ndarray]:
    """Each regenerated run's audio at ``clock.sr``: ``vocoded`` holds the model-rate audio of each run's vocoder
    ``windows`` (`vocoder_windows`), which are cut back to the run after resampling (the context keeps the
    vocoder's and the resampler's edges out of it). The last run, when it ends the recording, keeps all its audio."""
    out = []
    runs = [(a, b) for a, b, regenerated in layout.runs() if regenerated]
    for (a, b), (lo, _), wav in zip(runs, windows, vocoded, strict=True):
        audio = resample(wav, clock.model_sr, clock.sr)
        start, end = clock(a) - clock(lo), clock(b) - clock(lo)
        out.append(audio[start:] if b == layout.frames else audio[start:end])
    return out


def vocoder_windows(layout: Layout, context: int = VOCODER_CONTEXT) -> list[tuple[int, int]]:
    """The frames to vocode for each regenerated run: the run with ``context`` frames on each side."""
    return [(max(0, a - context), min(layout.frames, b + context)) for a, b, regenerated in layout.runs()
            if regenerated]


def splice(original: np.ndarray, layout: Layout, regenerated: Sequence[np.ndarray], clock: FrameClock) -> np.ndarray:
    """The edited recording at ``clock.sr``: each kept run is ``original``'s own samples (n,), each regenerated run
    its audio (`regenerated_audio`), faded in from the original that continues past the kept run before it and out
    into the original leading into the kept run after it. A regenerated run that ends the recording is trimmed by
    what the frame grid overhangs the original."""
    n = len(original)
    overhang = clock(int(layout.source.max(initial=-1)) + 1) - n if (layout.source >= 0).any() else 0
    fade = max(1, int(FADE_S * clock.sr))
    ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
    runs, pieces, parts = layout.runs(), iter(regenerated), []
    for i, (a, b, is_new) in enumerate(runs):
        if not is_new:
            first, last = int(layout.source[a]), int(layout.source[b - 1])
            parts.append(original[clock(first): n if b == layout.frames else min(n, clock(last + 1))])
            continue
        piece = np.array(next(pieces), dtype=np.float32)
        if b == layout.frames and overhang > 0:
            piece = piece[: max(0, len(piece) - overhang)]
        if i > 0:  # fade in from the original that continues past the kept run before
            start = clock(int(layout.source[a - 1]) + 1)
            tail = original[start: start + fade]
            k = min(len(tail), len(piece))
            piece[:k] = ramp[:k] * piece[:k] + (1 - ramp[:k]) * tail[:k]
        if i + 1 < len(runs):  # fade out into the original leading into the kept run after
            end = clock(int(layout.source[b]))
            lead = original[max(0, end - fade): end]
            k = min(len(lead), len(piece))
            if k:
                down = ramp[::-1][-k:]
                piece[-k:] = down * piece[-k:] + (1 - down) * lead[-k:]
        parts.append(piece)
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else original.copy()


def edit_layout(feats: Tensor, transcript: str, text: str, vocab: PhoneVocab, durations: DurationModel,
                aligner: PromptAligner | None, speed: float = 1.0, span: tuple[float, float] | None = None,
                speech_frames: int | None = None) -> tuple[Layout, list[Change]]:
    """Plan the edit of a recording, its features (T, n_mels) saying ``transcript``, to say ``text``: align the
    transcript's phones to the audio, find the changed words, give the new phones durations in the context of the
    kept ones. With ``span`` (seconds), ``text`` is instead what that stretch should say: the transcript's phones
    centred in it are replaced by text's (`span_change`). ``speech_frames``: the frames from the first to the last
    sound (`speech_frames`), which the transcript's length is checked against (default: all). SettingError names
    the parameter at fault: a transcript the audio cannot be saying (``transcript``), nothing changed or too much
    to regenerate (``text``), a span outside the recording (``spans``)."""
    with stage("text frontend"):
        old_symbols, old_words = phone_words(transcript, "transcript")
        new_symbols, new_words = phone_words(text, "text")
    old_ids = np.asarray(durations.vocab.encode(old_symbols), dtype=np.int64)
    spoken = feats.shape[0] if speech_frames is None else speech_frames
    ratio = spoken / max(float(context_free_frames(old_ids, durations).sum()), 1.0)
    if not PLAUSIBLE_LENGTH[0] <= ratio <= PLAUSIBLE_LENGTH[1]:
        raise SettingError(f"the recording is {ratio:.2f}x as long as its transcript would take to say: the "
                           "transcript does not match the audio", param="transcript")
    with stage("prompt alignment"):
        old_frames = (aligner.align(feats, aligner.vocab.encode(old_symbols)) if aligner is not None
                      else rescaled_prompt_durations(old_ids, feats.shape[0], durations)).astype(np.int64)
    fps = durations.config.fps
    if span is None:
        changes = find_changes(old_words, new_words, len(new_symbols))
    else:  # the text's words alone, without the pauses espeak-ng puts around a sentence
        seconds = feats.shape[0] / fps
        if not (math.isfinite(span[0]) and math.isfinite(span[1]) and 0 <= span[0] < span[1] and span[0] < seconds):
            raise SettingError(f"span ({span[0]}, {span[1]}) must satisfy 0 <= start < end and start < "
                               f"{seconds:.2f} s", param="spans")
        frames_span = (round(span[0] * fps), round(min(span[1], seconds) * fps))
        changes = [span_change(old_frames, frames_span, new_words, text)]
    symbols, kept = edited_sequence(old_symbols, new_symbols, changes)
    given = np.where(kept >= 0, old_frames[kept.clip(min=0)], 0)
    with stage("durations"):
        frames = durations.predict(durations.vocab.encode(symbols), given, kept >= 0, speed=speed).cpu().numpy()
    frames = np.where(kept >= 0, given, frames)  # exactly as aligned, whatever the rounding rules would make
    layout = layout_edit(kept, frames, old_frames, np.asarray(vocab.encode(symbols)), round(MARGIN_S * fps))
    if layout.generate.sum() > MAX_EDIT_S * fps:
        raise SettingError(f"the edit regenerates {layout.generate.sum() / fps:.1f} s of audio; at most "
                           f"{MAX_EDIT_S:g} s can be (edit fewer words at a time)", param="text")
    return layout, changes


def span_change(old_durations: np.ndarray, span: tuple[int, int], new_words: Words, text: str) -> Change:
    """The change that makes frames [first, end) of a recording say ``text`` (its words ``new_words``): the
    aligned phones whose middle frame lies in the span give way to the text's phones (from its first word's to its
    last word's); a span holding no phone's middle inserts them at the phone boundary nearest its start."""
    edges = np.concatenate([[0], np.cumsum(old_durations)])
    middles = (edges[:-1] + edges[1:]) / 2
    inside = np.flatnonzero((middles >= span[0]) & (middles < span[1]))
    if len(inside):
        old = (int(inside[0]), int(inside[-1]) + 1)
    else:
        at = int(np.abs(edges - span[0]).argmin())
        old = (at, at)
    return Change(old, (new_words[0][1], new_words[-1][2]), "", text)


def phone_words(text: str, param: str) -> tuple[list[str], list[tuple[str, int, int]]]:
    """`text_to_phone_words`, with text that has no words to speak a SettingError naming ``param``."""
    try:
        symbols, words = text_to_phone_words(text, max_chars=MAX_EDIT_TEXT_CHARS)
    except TextError as e:  # its messages may speak of "text": say which one
        message = str(e)
        message = param + message.removeprefix("text") if message.startswith("text") else f"{param}: {message}"
        raise SettingError(message, param=param) from e
    if not words:
        raise SettingError(f"{param} has no words to speak", param=param)
    return symbols, words


def row_windows(layout: Layout, context: int) -> list[tuple[int, int]]:
    """The frames each generation row covers: every regenerated run with ``context`` frames on each side (the
    voice and the words around it, which the model sees as known audio), runs whose windows overlap in one row.
    A row's work is thus bounded by the edit, not by the recording's length."""
    windows: list[list[int]] = []
    for a, b, regenerated in layout.runs():
        if not regenerated:
            continue
        lo, hi = max(0, a - context), min(layout.frames, b + context)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    return [(lo, hi) for lo, hi in windows]


def splice_plan(task: str, sampling: Sampling, feats: Tensor, layout: Layout, wav: np.ndarray, sr: int, seed: int,
                vocode: Callable[[list[Tensor]], list[np.ndarray]], hop: int, model_sr: int, param: str) -> Plan:
    """Rows of ``task``'s model generating a layout's regenerated frames from its kept ones (``feats`` (T, n_mels)
    of the original at ``model_sr``), one per `row_windows` window, seeded ``seed`` + row; the result spliced into
    the original waveform ``wav`` at its own rate ``sr`` (mono: the channels are mixed, as for every task). The rows
    hold at most MAX_ROWS_S of frames in all (else SettingError naming ``param``)."""
    sampling.one_draw("infilling or editing")
    device = feats.device
    source = torch.from_numpy(layout.source).to(device)
    keep = torch.from_numpy(~layout.generate).to(device)
    known = feats[source.clamp(min=0)] * keep[:, None]
    labels = None if layout.labels is None else torch.from_numpy(layout.labels).to(device)
    fps = model_sr / hop
    windows = row_windows(layout, round(CONTEXT_S * fps))
    if sum(hi - lo for lo, hi in windows) > MAX_ROWS_S * fps:
        raise SettingError(f"the regenerated stretches and the {CONTEXT_S:g} s of recording around each make "
                           f"{sum(hi - lo for lo, hi in windows) / fps:.1f} s to generate; at most {MAX_ROWS_S:g} s "
                           "can be (edit fewer places at a time)", param=param)
    rows = [Row(known[lo:hi], seed + i, known=known[lo:hi], known_mask=keep[lo:hi],
                extras={} if labels is None else {"phones": labels[lo:hi]}) for i, (lo, hi) in enumerate(windows)]
    original = prepare_waveform(wav, sr, sr)  # mono float at its own rate: the kept samples are the input's own
    clock = FrameClock(hop, model_sr, sr)

    def assemble(pieces: list[Tensor]) -> np.ndarray:
        feats_of = []  # each regenerated run's vocoder window, cut from the output of the row that made it
        for lo, hi in vocoder_windows(layout):
            row = next(k for k, (a, b) in enumerate(windows) if a <= lo and hi <= b)
            feats_of.append(pieces[row][lo - windows[row][0]: hi - windows[row][0]])
        vocoded = vocode(feats_of)
        return splice(original, layout, regenerated_audio(layout, vocoded, vocoder_windows(layout), clock), clock)

    return Plan(task, sampling, rows, assemble=assemble)


def speech_frames(log_mel: Tensor) -> int:
    """Frames from the first to the last that is within SILENCE_DB of the loudest (its loudest band), of a
    log-mel (T, n_mels): what a transcript's length is compared with, leading and trailing silence left out."""
    peak = log_mel.max(dim=-1).values
    loud = torch.nonzero(peak > peak.max() - SILENCE_DB * math.log(10) / 20).flatten()
    return int(loud[-1] - loud[0]) + 1 if len(loud) else int(log_mel.shape[0])
