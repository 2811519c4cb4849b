"""Phone alignments for manifest rows that have none, by the prompt forced aligner (`model/aligner.py`).

The synthetic corpus has exact alignments only for espeak-ng rows (phoneme events); flite and festival rows, and a
real corpus without MFA TextGrids, have text but no phones (a transcript in another language is phonemised in it
and mapped onto the English phones: `foreign_phones`). The aligner that aligns TTS prompts at inference aligns
them too: the transcript's phones from the same text frontend (espeak-ng, what TTS inference feeds the model) and
their frames by Viterbi over the aligner's frame posteriors. TTS and duration training then see every voice of the
corpus, not only espeak-ng's, which a speech recogniser cannot read (pocketsphinx: 95 % WER on espeak-ng
recordings, about 25 % on flite/festival ones).

Cuts that already carry phones are kept as they are; cuts whose text cannot be aligned to their audio (more phones
than frames, no text) are written without phones and counted. Labelled cuts get the phones as their supervision's
``alignment["phone"]`` and ``"phones_source": "aligner"`` in its ``custom``, so evaluations of alignment accuracy
can leave them out. The CutSet written keeps the input's audio paths, made absolute.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse.supervision import AlignmentItem
from tqdm import tqdm

from model.aligner import PromptAligner
from model.errors import SpeechFlowError
from model.features import MelSpectrogram
from model.text import text_to_phones

from .alignments import FRAMES_PER_SECOND
from .cuts import PHONE, SOURCE_KEY, cut_text, has_phones, write_cuts
from .foreign_phones import foreign_phones, primary_language
from .loading import load_mono
from .manifest import open_cuts

log = logging.getLogger(__name__)
SOURCE = "aligner"  # the value of SOURCE_KEY on labels made here


def frames_to_phone_times(symbols: list[str], frames: np.ndarray, fps: int = FRAMES_PER_SECOND
                          ) -> list[list[Any]]:
    """Phones and their frame counts (N,) -> [[symbol, start s, end s], ...] that `phones_to_frames` maps back to
    exactly those frames (phone k starts at the centre of its first frame)."""
    bounds = np.concatenate([[0], np.cumsum(frames)]) / fps
    return [[s, round(float(a), 5), round(float(b), 5)] for s, a, b in zip(symbols, bounds[:-1], bounds[1:],
                                                                              strict=True)]


@torch.no_grad()
def align_utterance(aligner: PromptAligner, mel: MelSpectrogram, wav: np.ndarray, text: str,
                    language: str | None = None) -> list[list[Any]]:
    """Forced alignment of one 16 kHz waveform (n,) to its transcript -> phone times in seconds. A ``language``
    other than English is phonemised in it and mapped onto the English phones (`foreign_phones`)."""
    feats = mel(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None])[0]  # (T, n_mels)
    english = language is None or primary_language(language) == "en"
    symbols = text_to_phones(text) if english else foreign_phones(text, language, aligner.vocab)
    frames = aligner.align(feats, aligner.vocab.encode(symbols))
    return frames_to_phone_times(symbols, frames)


def label_manifest(manifest: str | os.PathLike, aligner: PromptAligner, out: str | os.PathLike,
                   progress: bool = True) -> dict[str, int]:
    """Write the CutSet `out`: the cuts of `manifest` with phones added where they had none. Returns counts
    {"kept", "aligned", "failed"}."""
    manifest, out = Path(manifest), Path(out)
    mel = MelSpectrogram(aligner.config.mel)
    counts = {"kept": 0, "aligned": 0, "failed": 0}
    cuts = []
    for cut in tqdm(open_cuts(manifest), desc=f"aligning {manifest.name}", unit="utt", disable=not progress):
        if has_phones(cut):
            counts["kept"] += 1
        else:
            try:
                text = str(cut_text(cut) or "").strip()
                if not text or not cut.supervisions:
                    raise SpeechFlowError("no text")
                sup = cut.supervisions[0]
                phones = align_utterance(aligner, mel, load_mono(cut, mel.cfg.sample_rate), text, sup.language)
                sup.alignment = {**(sup.alignment or {}),
                                 PHONE: [AlignmentItem(s, a, b - a) for s, a, b in phones]}
                sup.custom = {**(sup.custom or {}), SOURCE_KEY: SOURCE}
                counts["aligned"] += 1
            except SpeechFlowError as e:  # text the audio cannot hold, unvoiceable text: keep the cut unlabelled
                log.warning("%s: not aligned (%s)", cut.id, e)
                counts["failed"] += 1
        cuts.append(cut)
    write_cuts(out, cuts)
    return counts
