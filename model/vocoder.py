"""Mel -> waveform. Until a trained vocoder is in the bundle, Griffin-Lim stands in, labelled as the fallback it is."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor

from .features import MelConfig, mel_to_waveform_griffin_lim


class GriffinLimVocoder:
    """Last-resort fallback: NNLS mel inversion + fast Griffin-Lim. Audibly phasey; no training needed."""

    name = "griffin-lim (last-resort fallback, no trained vocoder in the bundle)"

    def __init__(self, mel: MelConfig, n_iter: int = 32) -> None:
        self.mel, self.n_iter = mel, n_iter
        self._warned = False

    def __call__(self, feats: Tensor) -> Tensor:
        """Normalised log-mel (B, T, n_mels) -> waveform (B, T * hop)."""
        if not self._warned:  # say so once, when it is actually used
            warnings.warn(f"using {self.name}", stacklevel=2)
            self._warned = True
        return mel_to_waveform_griffin_lim(feats, self.mel, n_iter=self.n_iter)

    def batch(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """(T_i, n_mels) sequences -> one waveform (T_i * hop,) each: one by one (Griffin-Lim gains nothing from a
        padded batch)."""
        return [self(f[None])[0] for f in feats]
