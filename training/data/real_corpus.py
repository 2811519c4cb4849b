"""The real-speech corpus: every spoken Asterisk prompt (`training.data.asterisk`) converted once to 16 kHz 16-bit
FLAC (G.722 decodes to int16 exactly, so this is lossless for the 16 kHz packages; the 8 kHz ones are resampled),
and Lhotse CutSets in the synthetic corpus's layout: ``train_cuts.jsonl.gz``, ``valid_cuts.jsonl.gz``,
``test_cuts.jsonl.gz`` (audio paths relative to the corpus folder, so it can be moved whole), ``speakers.jsonl``,
and the music-on-hold tracks as ``music/{train,test}/*.flac`` (a noise kind).

The test split is every prompt of the held-out speakers, in every language they speak: Allison Smith records both
the English and the Spanish packages, so holding out only her English would leave the "unseen" speaker seen. Her
English prompts are also the real TTS prompts. Valid is a stable few percent of the other speakers' prompts (by a
hash of the id, so adding a package moves no prompt between train and valid). Each supervision records its codec,
source rate and bandwidth, so the 8 kHz speakers (4 kHz of content) can be kept out of enhancement and separation
targets, where a band-limited target would teach the model to low-pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
from lhotse import MonoCut, SupervisionSegment

from model.audio import SAMPLE_RATE
from model.checkpoint import atomic_write

from .asterisk import CODEC_BANDWIDTH_HZ, MOH_DIR, TEST_MUSIC, PromptAudio, list_utterances, load, music_files
from .convert import recording
from .cuts import BANDWIDTH_KEY, ManifestError, write_cuts

VALID_FRACTION = 0.03  # of the seen speakers' prompts, as in the synthetic corpus
TEST_SPEAKERS = ("allison-smith",)  # held out of train and valid in every language she speaks

Split = Literal["train", "valid", "test"]


def assign_split(utt: PromptAudio, test_speakers: Sequence[str] = TEST_SPEAKERS,
                 valid_fraction: float = VALID_FRACTION) -> Split:
    """Test: the held-out speakers, every language. Valid: a stable ``valid_fraction`` of the others' prompts (by a
    hash of the id, so adding a package does not move any prompt between train and valid)."""
    if utt.speaker in test_speakers:
        return "test"
    h = int.from_bytes(hashlib.sha1(utt.id.encode()).digest()[:8], "big") / 2**64
    return "valid" if h < valid_fraction else "train"


def _cut(utt: PromptAudio, flac: Path, num_samples: int, corpus: Path) -> MonoCut:
    rec = recording(utt.id, [flac], corpus, num_samples, SAMPLE_RATE)
    custom = {"corpus": "asterisk", "package": utt.package, "prompt": utt.prompt, "codec": utt.codec,
              "source_rate": utt.sample_rate, BANDWIDTH_KEY: CODEC_BANDWIDTH_HZ[utt.codec]}
    sup = SupervisionSegment(utt.id, utt.id, 0.0, rec.duration, text=utt.transcript, speaker=utt.speaker,
                             language=utt.language, gender=utt.gender, custom=custom)
    return MonoCut(utt.id, 0.0, rec.duration, 0, supervisions=[sup], recording=rec)


def _write_flac(path: Path, make: Callable[[], np.ndarray]) -> int:
    """``make()`` (16 kHz float32) -> 16-bit FLAC, written atomically; returns its length in samples. An existing
    file is kept (a resumed build decodes nothing again)."""
    if path.is_file():
        return int(sf.info(str(path)).frames)
    wav = np.clip(make(), -1.0, 32767 / 32768)
    atomic_write(path, lambda tmp: sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16", format="FLAC"))
    return int(wav.shape[0])


def write_corpus(
    out: str | os.PathLike,
    utterances: Sequence[PromptAudio] | None = None,
    test_speakers: Sequence[str] = TEST_SPEAKERS,
    test_music: Sequence[str] = TEST_MUSIC,
    valid_fraction: float = VALID_FRACTION,
    moh_dir: str | os.PathLike | None = MOH_DIR,
) -> dict[str, int]:
    """Every utterance -> ``out/audio/<speaker>/<language>/<prompt>.flac`` at 16 kHz, the CutSets
    ``out/{train,valid,test}_cuts.jsonl.gz``, ``out/speakers.jsonl`` and the music as
    ``out/music/{train,test}/<track>.flac``. Resumable (existing FLAC files are kept). Returns split -> cuts."""
    corpus = Path(os.path.abspath(out))
    utterances = list_utterances() if utterances is None else list(utterances)
    if not utterances:
        raise ManifestError("no Asterisk prompts found: install the asterisk-core-sounds-*-g722 packages")
    cuts: dict[str, list[MonoCut]] = {"train": [], "valid": [], "test": []}
    for utt in utterances:
        flac = corpus / "audio" / utt.speaker / utt.language / f"{utt.prompt}.flac"
        n = _write_flac(flac, partial(load, utt.path, utt.codec))
        cuts[assign_split(utt, test_speakers, valid_fraction)].append(_cut(utt, flac, n, corpus))
    for split, items in cuts.items():
        write_cuts(corpus / f"{split}_cuts.jsonl.gz", items)
    speakers: dict[str, dict[str, Any]] = {}
    for utt in utterances:
        s = speakers.setdefault(utt.speaker, {"name": utt.speaker, "gender": utt.gender, "languages": [],
                                              "packages": [], "unseen": utt.speaker in test_speakers})
        for key, value in (("languages", utt.language), ("packages", utt.package)):
            if value not in s[key]:
                s[key].append(value)
    (corpus / "speakers.jsonl").write_text("".join(json.dumps(s) + "\n" for s in speakers.values()))
    if moh_dir is not None:
        for name, path in music_files(moh_dir).items():
            split = "test" if name in test_music else "train"
            codec = "g722" if path.suffix == ".g722" else "wav"
            _write_flac(corpus / "music" / split / f"{name}.flac", partial(load, path, codec))
    return {split: len(items) for split, items in cuts.items()}
