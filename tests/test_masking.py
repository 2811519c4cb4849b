import numpy as np
import pytest

from model.config import FlowConfig
from training.tasks.masking import pretraining_masks, span_mask


def _spans(mask):
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


@pytest.mark.parametrize("length", [5, 10, 37, 300, 1600])
def test_span_mask_fraction_and_min_span(length):
    rng = np.random.default_rng(0)
    for _ in range(200):
        fraction = rng.uniform(0.7, 1.0)
        mask = span_mask(rng, length, fraction, 10)
        expected = min(length, max(10, round(fraction * length)))
        assert mask.sum() == expected
        assert all(end - start >= min(10, length) for start, end in _spans(mask))


def test_pretraining_masks_follow_the_recipe():
    rng = np.random.default_rng(1)
    cfg = FlowConfig()
    lengths = [300] * 2000
    masks = pretraining_masks(rng, lengths, 320, cfg).numpy()
    assert not masks[:, 300:].any()  # padding is never a target
    fractions = masks[:, :300].mean(1)
    full = fractions == 1.0
    assert 0.07 < full.mean() < 0.16  # p_uncond 0.1 plus masks that happen to cover everything
    assert fractions.min() >= 0.7 - 1e-9
    assert 0.8 < fractions[~full].mean() < 0.9  # r ~ U(0.7, 1.0)
