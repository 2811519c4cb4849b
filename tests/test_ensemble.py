"""Ensembles: the masks of several independent draws averaged, in the reconstruction and through the pipeline."""

import numpy as np
import pytest
import torch

from model.defaults import MAX_ENSEMBLE, Sampling, sampling
from model.errors import ConfigError
from model.features import MelSpectrogram
from model.reconstruct import mask_reconstruction, mean_mask_features, separation_masks
from service.engine import SamplingKey, TaskParams
from tests.conftest import speechlike

MEL = MelSpectrogram()


def noisy_input(seconds: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    wav = torch.from_numpy(speechlike(seconds, seed=1) + 0.05 * np.random.default_rng(2).standard_normal(
        int(seconds * 16000)).astype(np.float32))
    return wav, MEL(wav)[0]  # (n,), normalised log-mel (T, n_mels)


def draws_near(cond: torch.Tensor, n: int, streams: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Generated-looking windows: the input's features moved by different amounts per draw, band and frame."""
    gen = torch.Generator().manual_seed(seed)
    return [cond.repeat(1, streams) - torch.rand(cond.shape[0], streams * cond.shape[1], generator=gen)
            for _ in range(n)]


def test_one_draw_is_returned_as_it_is():
    _, cond = noisy_input()
    [draw] = draws_near(cond, 1)
    assert mean_mask_features(cond, [draw], MEL) is draw


def test_enhancement_ensemble_equals_the_mean_of_the_draws_outputs():
    wav, cond = noisy_input()
    draws = draws_near(cond, 3)
    outputs = [mask_reconstruction(wav[None], d[None], MEL)[0] for d in draws]
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3  # the draws differ, so the mean is not any one of them
    mean = mask_reconstruction(wav[None], mean_mask_features(cond, draws, MEL)[None], MEL)[0]
    torch.testing.assert_close(mean, torch.stack(outputs).mean(0), atol=1e-5, rtol=0)


def test_separation_ensemble_matches_speaker_order_before_averaging():
    wav, cond = noisy_input()
    a, b = draws_near(cond, 2, streams=2)
    swapped_b = torch.cat(b.chunk(2, dim=-1)[::-1], dim=-1)  # the same draw with the speakers the other way round
    outputs = [separation_masks(wav[None], d[None], MEL)[0] for d in (a, b)]
    for draws in ([a, b], [a, swapped_b]):
        mean = separation_masks(wav[None], mean_mask_features(cond, draws, MEL)[None], MEL)[0]  # (2, n)
        torch.testing.assert_close(mean, torch.stack(outputs).mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(mean.sum(0), wav, atol=1e-4, rtol=0)  # still a split of the mixture


def test_pipeline_ensemble_is_the_mean_of_single_draws_at_the_draw_seeds(task_pipe):
    wav = speechlike(1.5, seed=6)
    ensemble, _ = task_pipe.enhance(wav, 16000, steps=2, seed=3, ensemble=3)
    singles = [task_pipe.enhance(wav, 16000, steps=2, seed=3 + 999_983 * j, ensemble=1)[0] for j in range(3)]
    assert np.abs(singles[0] - singles[1]).max() > 1e-3  # the fixture's model makes the draws differ
    np.testing.assert_allclose(ensemble, np.mean(singles, axis=0), atol=1e-4)
    # in a batch with another request, and over windows of a long input, it is what it is alone
    long = speechlike(7.0, seed=7)
    alone = task_pipe.separate(long, 16000, steps=2, seed=5, ensemble=2, window_s=3.0)[0]
    batch = task_pipe.separate_batch([(wav, 16000), (long, 16000)], steps=2, seed=[0, 5], ensemble=2,
                                     window_s=3.0)
    np.testing.assert_allclose(batch[1][0], alone, atol=1e-4)
    np.testing.assert_allclose(alone.sum(0), long, atol=1e-3)


def test_ensemble_bounds_and_tasks(task_pipe):
    wav = speechlike(0.5, seed=1)
    for bad in (0, MAX_ENSEMBLE + 1):
        with pytest.raises(ConfigError, match="ensemble must be between 1 and"):
            task_pipe.enhance(wav, 16000, steps=1, ensemble=bad)
    plan = task_pipe.plan_task("enhance", wav, 16000, seed=0, sampling=Sampling(steps=1, guidance=1.0, ensemble=4))
    assert len(plan.rows) == 4 and len({r.seed for r in plan.rows}) == 4
    with pytest.raises(ConfigError, match="infilling or editing takes one draw"):
        task_pipe.infill(wav, 16000, [(0.1, 0.2)], steps=1, ensemble=2)


def test_requests_with_different_ensembles_share_a_live_batch():
    two, four = (TaskParams(sampling("enhance", ensemble=e), seed=0) for e in (2, 4))
    assert SamplingKey.of("enhance", two) == SamplingKey.of("enhance", four)
    # steps and guidance are per row too; only the solver and the task split live batches
    assert SamplingKey.of("enhance", two) == SamplingKey.of("enhance", TaskParams(sampling("enhance", steps=8), 0))
    midpoint = TaskParams(sampling("enhance", solver="midpoint"), 0)
    assert SamplingKey.of("enhance", two) != SamplingKey.of("enhance", midpoint)
    assert SamplingKey.of("enhance", two) != SamplingKey.of("separate", TaskParams(sampling("separate"), 0))
