"""Speech editing evaluation: change one to three words of held-out recordings and measure what a listener would.

Cases are the TTS evaluation's (`tts_cases`, or `real_tts_cases` for the real split): the recording to edit is the
real recording of the case's sentence by an unseen speaker, its transcript the sentence. Case i replaces 1 + (i mod
3) consecutive words, at a position drawn from a generator seeded by (seed, i), with words from `REPLACEMENTS`.
The comparison is plain TTS of the whole new sentence in the same voice (the case's prompt: another recording of
the speaker, as in the TTS evaluation). Per case:

- **New words heard**: the share of the new words the recogniser (Whisper tiny.en) finds in place (difflib's
  matching blocks of its transcript against the new text), for the edit and for the TTS; and both outputs' WER
  against the new text beside the recording's own WER against its transcript (the recogniser's floor here).
- **Speaker similarity** of the regenerated stretch (the new words and margins) to the rest of the edited
  recording (resemblyzer d-vectors), beside the same measure for the original words at that place in the original
  recording (what a stretch that short scores when nothing was changed), and the TTS output's similarity to the
  recording.
- **Boundary flux**: the log-mel spectral flux (mean absolute change between frames) at the splices, the
  largest over the two frames each side of each edge of a regenerated stretch, divided by the mean flux at the
  recording's own phone boundaries; the same ratio of the original recording at the same places is the reference
  (a splice no rougher than the speech it replaced scores about the same).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from model.audio import SAMPLE_RATE
from model.editing import edit_layout
from model.recognizer import normalize_transcript, transcribe
from model.text import PhoneVocab
from training.data.manifest import Utterance
from training.evaluation.common import nanmean, write_json
from training.evaluation.real_cases import real_tts_cases
from training.evaluation.tts_cases import TTSCase, tts_cases
from training.evaluation.tts_metrics import speaker_similarity, word_errors

REPLACEMENTS = ("purple", "yesterday", "garden", "seven", "window", "quickly", "river", "morning", "silver",
                "coffee", "mountain", "paper", "yellow", "seventeen", "orange", "tomorrow", "kitchen", "music")
EDGE_FRAMES = 2  # frames each side of a splice where its flux is looked for (the cross-fade is 2 frames)


def edited_text(text: str, rng: np.random.Generator, words: int) -> tuple[str, list[int]]:
    """``text`` with ``words`` consecutive words (at a seeded place) replaced -> (new text, the new words'
    positions in it)."""
    tokens = text.split()
    words = min(words, len(tokens))
    at = int(rng.integers(0, len(tokens) - words + 1))
    taken = {normalize_transcript(t) for t in tokens}
    pool = [w for w in REPLACEMENTS if w not in taken]
    new = [str(w) for w in rng.choice(pool, size=words, replace=False)]
    tail = tokens[at + words - 1][len(tokens[at + words - 1].rstrip(".,;:!?")):]  # keep the sentence's punctuation
    new[-1] += tail
    return " ".join([*tokens[:at], *new, *tokens[at + words:]]), list(range(at, at + words))


def words_heard(text: str, positions: Sequence[int], heard: str) -> float:
    """The share of ``text``'s words at ``positions`` that the recogniser's ``heard`` has in place."""
    said, got = normalize_transcript(text).split(), normalize_transcript(heard).split()
    matched = set()
    for block in difflib.SequenceMatcher(a=said, b=got, autojunk=False).get_matching_blocks():
        matched.update(range(block.a, block.a + block.size))
    return sum(p in matched for p in positions) / len(positions)


def flux(log_mel: np.ndarray) -> np.ndarray:
    """(T,) spectral flux: the mean absolute change of each frame's log-mel from the one before (0 for frame 0)."""
    return np.concatenate([[0.0], np.abs(np.diff(log_mel, axis=0)).mean(axis=1)])


def edge_flux(f: np.ndarray, edges: Sequence[int]) -> float:
    return nanmean(float(f[max(1, e - EDGE_FRAMES): e + EDGE_FRAMES].max()) for e in edges if e < len(f))


def score_case(pipe: Any, case: TTSCase, index: int, seed: int, tts_kwargs: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng([seed, index])
    text, positions = edited_text(case.text, rng, 1 + index % 3)
    recording = case.target
    edited, _ = pipe.edit(recording, SAMPLE_RATE, text, case.text, seed=seed + index, **tts_kwargs)
    spoken, sr = pipe.tts(text, prompt_wav=case.prompt, prompt_sr=SAMPLE_RATE, prompt_text=case.prompt_text,
                          seed=seed + index, **tts_kwargs)
    # where the edit regenerated: the same plan the pipeline made (16 kHz: layout frame f is output sample 160 f)
    feats = pipe.features([recording])[0][0]
    layout, _ = edit_layout(feats, case.text, text, PhoneVocab(pipe.model("tts").config.phones), pipe.durations,
                            pipe.aligner)
    hop = pipe.mel_config.hop_length
    runs = [(a, b) for a, b, regenerated in layout.runs() if regenerated]
    new_part = np.concatenate([edited[a * hop: b * hop] for a, b in runs])
    kept_part = np.concatenate([edited[a * hop: b * hop] for a, b, regenerated in layout.runs() if not regenerated])
    # each run's stretch of the original: from the frame after the last kept one before it to the next kept one
    sources = [(int(layout.source[a - 1]) + 1 if a > 0 else 0, int(layout.source[min(b, layout.frames - 1)]))
               for a, b in runs]
    old_part = np.concatenate([recording[lo * hop: hi * hop] for lo, hi in sources])
    old_rest = np.concatenate([recording[: sources[0][0] * hop], recording[sources[-1][1] * hop:]])
    log_edit = pipe.mel.log_mel(torch_of(edited))[0].cpu().numpy()
    log_orig = pipe.mel.log_mel(torch_of(recording))[0].cpu().numpy()
    kept = layout.source >= 0
    phone_edges = [f for f in range(1, layout.frames) if kept[f] and kept[f - 1] and not layout.generate[f]
                   and layout.labels[f] != layout.labels[f - 1]]
    natural = nanmean(float(flux(log_edit)[f]) for f in phone_edges)
    heard_edit, heard_tts = transcribe(edited, SAMPLE_RATE), transcribe(spoken, sr)
    return {
        "id": case.id, "text": case.text, "edited_text": text, "words": len(positions),
        "regenerated_s": sum(b - a for a, b in runs) * hop / SAMPLE_RATE,
        "heard_edit": words_heard(text, positions, heard_edit), "heard_tts": words_heard(text, positions, heard_tts),
        "wer_edit": ratio(word_errors(text, heard_edit)), "wer_tts": ratio(word_errors(text, heard_tts)),
        "wer_recording": ratio(word_errors(case.text, transcribe(recording, SAMPLE_RATE))),
        "similarity_edit": speaker_similarity(new_part, kept_part),
        "similarity_original": speaker_similarity(old_part, old_rest),
        "similarity_tts": speaker_similarity(spoken, recording, sr) if sr == SAMPLE_RATE else float("nan"),
        "flux_edit": edge_flux(flux(log_edit), [e for a, b in runs for e in (a, b)]) / natural,
        "flux_original": edge_flux(flux(log_orig), [e for lo, hi in sources for e in (lo, hi)]) / natural,
    }


def torch_of(wav: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]


def ratio(errors_words: tuple[int, int]) -> float:
    errors, words = errors_words
    return errors / words if words else float("nan")


SUMMARY = ("heard_edit", "heard_tts", "wer_edit", "wer_tts", "wer_recording", "similarity_edit",
           "similarity_original", "similarity_tts", "flux_edit", "flux_original", "regenerated_s")


def run_edit_evaluation(pipe: Any, manifest: str | os.PathLike | Sequence[Utterance], n: int = 30, seed: int = 0,
                        conditions: str = "synthetic", json_out: str | os.PathLike | None = None,
                        tts_kwargs: dict[str, Any] | None = None,
                        extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Edit ``n`` held-out recordings (see the module's docstring) -> per-case rows and their means."""
    cases = real_tts_cases(manifest, n, seed) if conditions == "real" else tts_cases(manifest, n, seed)
    rows = [score_case(pipe, case, i, seed, dict(tts_kwargs or {}))
            for i, case in enumerate(tqdm(cases, desc="edit", unit="case"))]
    results = {"overall": {key: nanmean(r[key] for r in rows) for key in SUMMARY}, "cases": rows,
               "config": {"task": "edit", "manifest": str(manifest), "n": len(rows), "seed": seed,
                          "conditions": conditions, **dict(extra_config or {})}}
    if json_out is not None:
        write_json(results, json_out)
    return results
