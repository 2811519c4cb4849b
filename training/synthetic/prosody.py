"""Per-utterance prosody for the synthetic corpus (``--prosody``): each engine's own controls, around the speaker.

One `Prosody` is drawn per utterance in engine-neutral terms (tempo, semitones, intonation range, tune) and mapped
onto what each engine takes; checked on espeak-ng 1.51, flite 2.2 and festival 2.5 (median F0 and duration of the
output against the neutral call):

- espeak-ng, through libespeak-ng in the very call that reports the phone events, so phones stay exact: rate (words
  per minute), pitch (0..100, about 6 units a semitone), pitch range (espeakRANGE: 0 is a monotone, 50 the voice's
  own, sample-identical to not setting it) and the tune (espeakINTONATION, rows 1..7 of the tune table);
- flite: ``duration_stretch`` (tempo) and ``f0_shift`` (multiplies F0) work for kal16, awb and slt; rms ignores
  every F0 control (``f0_shift``, ``int_f0_target_mean`` / ``_stddev``: bit-identical output), so it varies in
  tempo only. The F0 range (``int_f0_target_stddev``) is absolute with voice-internal defaults: left alone;
- festival: the kal / ked diphone voices take ``Duration_Stretch`` (their voice files set 1.1) and
  ``int_lr_params`` (target F0 mean 105 Hz, std 14 / 15 Hz in the same files) for pitch and range; the HTS slt
  voice ignores both and hts_engine's -fm / -fs, and takes only -r (speed), so it varies in tempo only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.espeak import PITCH_RANGE, PITCH_RANGE_RANGE, RATE_RANGE

ESPEAK_PITCH_PER_SEMITONE = 6.0  # measured: pitch 50 -> 60 raises the median F0 by 1.5 (m3) to 1.7 (f2) semitones
# festival diphone voices' own settings (voices/english/{kal,ked}_diphone/festvox/*.scm)
_DIPHONE = {"kal_diphone": (1.1, 105.0, 14.0), "ked_diphone": (1.1, 105.0, 15.0)}  # stretch, F0 mean, F0 std
_HTS = {"cmu_us_slt_arctic_hts"}


@dataclass(frozen=True)
class Prosody:
    tempo: float = 1.0  # duration factor: > 1 is slower
    semitones: float = 0.0  # pitch shift
    range: float = 1.0  # intonation range factor (espeak-ng, festival diphones)
    intonation: int = 0  # espeak-ng tune row; 0 keeps the voice's own


def draw_prosody(rng: np.random.Generator) -> Prosody:
    """Tempo +-10 %, pitch +-2 semitones, range x0.5..x1.75, one of the voice's tune or rows 1-3."""
    return Prosody(tempo=round(float(rng.uniform(0.9, 1.1)), 3), semitones=round(float(rng.uniform(-2.0, 2.0)), 2),
                   range=round(float(2.0 ** rng.uniform(-1.0, 0.8)), 3), intonation=int(rng.integers(0, 4)))


def _clip(value: float, bounds: tuple[int, int]) -> int:
    return int(min(max(round(value), bounds[0]), bounds[1]))


def espeak_args(p: Prosody, rate: int, pitch: int) -> dict[str, int]:
    """Keyword arguments of `model.espeak.synthesize` for a speaker's rate and pitch under `p`."""
    return {"rate": _clip(rate / p.tempo, RATE_RANGE), "pitch": _clip(pitch + ESPEAK_PITCH_PER_SEMITONE * p.semitones,
                                                                       PITCH_RANGE),
            "pitch_range": _clip(50 * p.range, PITCH_RANGE_RANGE), "intonation": p.intonation}


def flite_args(p: Prosody, stretch: float) -> list[str]:
    """flite options for a speaker's duration stretch under `p`."""
    return ["--setf", f"duration_stretch={stretch * p.tempo:.4f}", "--setf", f"f0_shift={2 ** (p.semitones / 12):.4f}"]


def festival_evals(p: Prosody, voice: str) -> list[str]:
    """Scheme forms to evaluate after selecting a festival voice (none for a voice whose controls are unknown)."""
    if voice in _DIPHONE:
        stretch, mean, std = _DIPHONE[voice]
        return [f"(Parameter.set 'Duration_Stretch {stretch * p.tempo:.4f})",
                f"(set! int_lr_params '((target_f0_mean {mean * 2 ** (p.semitones / 12):.2f}) "
                f"(target_f0_std {std * p.range:.2f}) (model_f0_mean 170) (model_f0_std 34)))"]
    if voice in _HTS:
        return [f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / p.tempo:.4f}))))']
    return []
