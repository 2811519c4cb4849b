"""Phone alignments for manifest rows that have none, by the prompt forced aligner (`model/aligner.py`).

The synthetic corpus has exact alignments only for espeak-ng rows (phoneme events); flite and festival rows, and a
real corpus without MFA TextGrids, have text but no phones. The aligner that aligns TTS prompts at inference aligns
them too: the transcript's phones from the same text frontend (espeak-ng, what TTS inference feeds the model) and
their frames by Viterbi over the aligner's frame posteriors. TTS and duration training then see every voice of the
corpus, not only espeak-ng's, which a speech recogniser cannot read (pocketsphinx: 95 % WER on espeak-ng
recordings, about 25 % on flite/festival ones).

Rows that already carry phones are kept as they are; rows whose text cannot be aligned to their audio (more phones
than frames, no text) are written without phones and counted. Labelled rows get ``"phones_source": "aligner"`` so
evaluations of alignment accuracy can leave them out.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.aligner import PromptAligner
from model.audio import load_audio
from model.errors import SpeechFlowError
from model.features import MelSpectrogram
from model.text import text_to_phones

from .alignments import FRAMES_PER_SECOND
from .manifest import read_manifest, write_manifest

log = logging.getLogger(__name__)
SOURCE_KEY, SOURCE = "phones_source", "aligner"


def frames_to_phone_times(symbols: list[str], frames: np.ndarray, fps: int = FRAMES_PER_SECOND
                          ) -> list[list[Any]]:
    """Phones and their frame counts (N,) -> [[symbol, start s, end s], ...] that `phones_to_frames` maps back to
    exactly those frames (phone k starts at the centre of its first frame)."""
    bounds = np.concatenate([[0], np.cumsum(frames)]) / fps
    return [[s, round(float(a), 5), round(float(b), 5)] for s, a, b in zip(symbols, bounds[:-1], bounds[1:],
                                                                              strict=True)]


@torch.no_grad()
def align_utterance(aligner: PromptAligner, mel: MelSpectrogram, wav: np.ndarray, text: str) -> list[list[Any]]:
    """Forced alignment of one 16 kHz waveform (n,) to its transcript -> phone times in seconds."""
    feats = mel(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None])[0]  # (T, n_mels)
    symbols = text_to_phones(text)
    frames = aligner.align(feats, aligner.vocab.encode(symbols))
    return frames_to_phone_times(symbols, frames)


def label_manifest(manifest: str | os.PathLike, aligner: PromptAligner, out: str | os.PathLike,
                   progress: bool = True) -> dict[str, int]:
    """Write `out`: the rows of `manifest` with phones added where they had none. Audio paths are written so that
    they resolve from `out`'s directory. Returns counts {"kept", "aligned", "failed"}."""
    manifest, out = Path(manifest), Path(out)
    utterances = read_manifest(manifest)
    mel = MelSpectrogram(aligner.config.mel)
    counts = {"kept": 0, "aligned": 0, "failed": 0}
    rows = []
    for utt in tqdm(utterances, desc=f"aligning {manifest.name}", unit="utt", disable=not progress):
        row = {"audio": os.path.relpath(utt.audio.resolve(), out.parent.resolve()), "duration": utt.duration,
               **utt.meta}
        if row.get("phones"):
            counts["kept"] += 1
        else:
            try:
                text = str(row.get("text") or "").strip()
                if not text:
                    raise SpeechFlowError("no text")
                row["phones"] = align_utterance(aligner, mel, load_audio(utt.audio), text)
                row[SOURCE_KEY] = SOURCE
                counts["aligned"] += 1
            except SpeechFlowError as e:  # text the audio cannot hold, unvoiceable text: keep the row unlabelled
                log.warning("%s: not aligned (%s)", utt.audio, e)
                counts["failed"] += 1
        rows.append(row)
    write_manifest(out, rows)
    return counts
