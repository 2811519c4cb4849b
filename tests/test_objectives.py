"""Training objectives: which frames the TTS loss counts, what its condition holds, and how often the condition is
dropped for classifier-free guidance (``drop_condition`` and the TTS objective's own dropout)."""

import numpy as np
import torch

from model.config import ModelConfig, preset
from training.tasks.enhance_separate import drop_condition
from training.tasks.tts import TTSObjective


def test_drop_condition_zeroes_whole_samples_at_the_rate_p():
    cond = torch.randn(4000, 3, 2) + 5.0  # never 0 by chance
    out = drop_condition(cond, 0.1, torch.Generator().manual_seed(0))
    dropped = (out == 0).all(dim=(1, 2))
    kept = (out == cond).all(dim=(1, 2))
    assert bool((dropped | kept).all())  # a sample is dropped whole or left untouched, never in part
    assert 0.085 < float(dropped.float().mean()) < 0.115  # 400 of 4000 expected (sd ~19)
    assert torch.equal(out, drop_condition(cond, 0.1, torch.Generator().manual_seed(0)))  # seeded: resumable
    assert torch.equal(drop_condition(cond, 0.0, torch.Generator()), cond)
    assert not drop_condition(cond, 1.0, torch.Generator()).any()


class _Recorder:
    """Stands in for FlowMatching.loss: keeps what the objective passes to it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []

    def loss(self, net, x1, cond, mask, loss_mask, generator=None, phones=None):
        self.calls.append({"x1": x1, "cond": cond, "mask": mask, "loss_mask": loss_mask, "phones": phones})
        return torch.zeros(())


def _batch(rng: np.random.Generator, lengths: list[int]) -> dict[str, torch.Tensor]:
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = torch.from_numpy(0.1 * rng.standard_normal(n).astype(np.float32))
    phones = torch.from_numpy(rng.integers(1, 12, size=(len(lengths), max(lengths) // 160 + 1)))
    return {"wav": wav, "lengths": torch.tensor(lengths), "phones": phones}


def test_the_tts_objective_counts_masked_real_frames_and_drops_the_condition_at_p_uncond():
    config = ModelConfig(task="tts", network=preset("debug", n_phones=12))
    objective = TTSObjective(config)
    recorder = _Recorder()
    objective.flow = recorder
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        objective(None, _batch(rng, [4800, 3200, 1600, 4000, 2400, 4800, 1200, 3600]), rng, gen)

    drops, rows = 0, 0
    for call in recorder.calls:
        x1, cond, mask, masked, phones = (call[k] for k in ("x1", "cond", "mask", "loss_mask", "phones"))
        assert not (masked & ~mask).any()  # the loss never counts a padding frame
        share = masked.sum(1) / mask.sum(1)
        assert bool((share >= config.flow.mask_min - 0.05).all())  # 70-100 % of the real frames are targets
        assert not (cond[masked] != 0).any()  # a target frame is never visible in the condition
        assert not (phones[~mask] != 0).any()  # no phones on padding
        dropped = (phones == 0).all(1)  # real frames always carry a phone (1..11) unless the row is dropped
        for i in range(x1.shape[0]):
            context = mask[i] & ~masked[i]
            if dropped[i]:
                assert not cond[i].any()  # audio context and phones go together
            else:
                torch.testing.assert_close(cond[i][context], x1[i][context], rtol=0, atol=0)
        drops += int(dropped.sum())
        rows += x1.shape[0]
    assert abs(drops / rows - config.flow.p_uncond) < 0.04, drops / rows  # 48 of 480 expected (sd ~6.6)
