"""Signal levels at 16 kHz: mean power, and the active speech level that SNRs and relative levels are defined on."""

from __future__ import annotations

import numpy as np

FRAME = 320  # 20 ms frames for active-power measurement
ACTIVE_FLOOR_DB = 40.0  # frames this far below the loudest frame count as silence
SILENT_POWER = 1e-10  # mean power below -100 dBFS is treated as silence (avoids dividing by ~0)


def mean_power(x: np.ndarray) -> float:
    """Mean square of (n,) over all samples."""
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def active_power(x: np.ndarray, floor_db: float = ACTIVE_FLOOR_DB, frame: int = FRAME) -> float:
    """Mean square of (n,) over its active frames: those within `floor_db` of the loudest 20 ms frame.

    This is the speech level that SNR and relative levels are defined on, so leading/trailing silence or pauses do
    not make a quiet utterance look even quieter. 0.0 for silence.
    """
    sq = np.square(np.asarray(x, dtype=np.float64))
    if sq.size == 0:
        return 0.0
    bounds = np.arange(0, sq.size, frame)
    sums = np.add.reduceat(sq, bounds)  # a trailing partial frame is its own frame
    counts = np.diff(np.append(bounds, sq.size))
    powers = sums / counts
    loudest = float(powers.max())
    if loudest < SILENT_POWER:
        return 0.0
    active = powers >= loudest * 10.0 ** (-floor_db / 10.0)
    return float(sums[active].sum() / counts[active].sum())
