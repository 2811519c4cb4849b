"""training.trainers.discriminators + the adversarial vocoder objective: what each loss reaches, that the critic
learns, and that an adversarial run (critic weights and optimizer in its state) resumes exactly and only as it was
started."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from model.errors import CheckpointError
from model.vocos import VocosConfig, VocosVocoder
from tests.conftest import speechlike
from training.trainers.discriminators import Discriminators, discriminator_loss
from training.trainers.trainer import STATE_FILE, TrainConfig
from training.trainers.vocoder import AdversarialVocoderObjective, VocoderObjective, train_vocoder

TINY = dict(dim=32, intermediate_dim=64, layers=2)
FAST = dict(lr=2e-3, warmup=5, batch_seconds=4.0, max_seconds=1.0, log_every=5, precision="fp32", num_workers=0,
            device="cpu")


def _speech(batch: int, seconds: float = 0.5) -> torch.Tensor:
    return torch.from_numpy(np.stack([speechlike(seconds, seed=i) for i in range(batch)]))


@pytest.mark.parametrize("samples", [8000, 8001, 8003])
def test_every_sub_discriminator_judges_any_length(samples):
    torch.manual_seed(0)
    critic = Discriminators()
    judgements = critic(torch.randn(2, samples))
    assert len(judgements) == 8  # five periods, three resolutions
    for logits, features in judgements:
        assert logits.shape[0] == 2 and logits.shape[1] > 0 and torch.isfinite(logits).all()
        assert all(f.shape[0] == 2 for f in features) and features[-1].flatten(1).shape == logits.shape


def test_the_critic_learns_to_tell_speech_from_a_smeared_copy():
    # "generated" audio = the real audio with its fine structure smeared (a moving average) plus hiss: what an
    # over-smoothed vocoder does. A critic that cannot tell them apart answers 0.5 to both, a least-squares loss of
    # 0.5 per sub-discriminator (4 for the eight); it must get well below that.
    torch.manual_seed(0)
    real = _speech(4)
    fake = torch.nn.functional.avg_pool1d(real[:, None], 9, 1, 4)[:, 0] + 0.01 * torch.randn_like(real)
    critic = Discriminators()
    opt = torch.optim.AdamW(critic.parameters(), lr=1e-3)
    losses = []
    for _ in range(80):
        loss = discriminator_loss(critic(real), critic(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 2.0, [round(x, 2) for x in losses[::10]]


def test_each_loss_reaches_only_its_own_network():
    torch.manual_seed(0)
    vocoder = VocosVocoder(VocosConfig(**TINY))
    objective = AdversarialVocoderObjective(vocoder.config)
    batch = {"wav": _speech(2), "lengths": torch.tensor([8000, 6000])}
    batch["wav"][1, 6000:] = 0

    loss = objective(vocoder.net, batch, None, None)
    loss.backward()
    assert all(p.grad is None for p in objective.critic.parameters())  # the generator's loss moves G only
    adversarial_grad = [p.grad.clone() for p in vocoder.net.parameters()]
    assert set(objective.metrics) == {"stft", "mel", "adv", "fm"} and objective.metrics["adv"] > 0
    vocoder.net.zero_grad()
    VocoderObjective(vocoder.config)(vocoder.net, batch, None, None).backward()
    # the adversarial and feature-matching terms change the generator's gradient
    assert any(not torch.allclose(a, p.grad) for a, p in zip(adversarial_grad, vocoder.net.parameters(), strict=True))

    vocoder.net.zero_grad()
    objective.critic_loss().backward()
    assert all(p.grad is None or not p.grad.any() for p in vocoder.net.parameters())  # generated audio held fixed
    assert all(p.grad is not None for p in objective.critic.parameters())
    assert objective.metrics["critic"] > 0
    with pytest.raises(RuntimeError, match="generator step"):
        objective.critic_loss()  # one critic step per batch


def test_an_adversarial_run_resumes_to_the_same_weights_and_only_as_started(tiny_corpus, tmp_path, monkeypatch):
    cfg = TrainConfig(steps=12, save_every=6, **FAST)
    train_vocoder(tiny_corpus, tmp_path / "a", VocosConfig(**TINY), cfg, adversarial=True)

    import training.data.loading as data_module

    real_make_loader = data_module.make_loader

    def dying_loader(*args, **kwargs):
        def batches():
            for i, batch in enumerate(real_make_loader(*args, **kwargs)):
                if i == 8:
                    raise KeyboardInterrupt  # two steps after the step-6 save
                yield batch
        return batches()

    monkeypatch.setattr(data_module, "make_loader", dying_loader)
    with pytest.raises(KeyboardInterrupt):
        train_vocoder(tiny_corpus, tmp_path / "b", VocosConfig(**TINY), cfg, adversarial=True)
    monkeypatch.setattr(data_module, "make_loader", real_make_loader)
    train_vocoder(tiny_corpus, tmp_path / "b", None, cfg, resume=True, adversarial=True)

    a, b = VocosVocoder.from_pretrained(tmp_path / "a"), VocosVocoder.from_pretrained(tmp_path / "b")
    assert a.config.extra["objective"] == "adversarial"
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(v, b.net.state_dict()[k], atol=1e-5, rtol=1e-4, msg=k)
    states = [safe_open(str(tmp_path / run / STATE_FILE), "pt") for run in ("a", "b")]
    with states[0] as fa, states[1] as fb:
        critic_keys = [k for k in fa.keys() if k.startswith(("critic.", "critic_optim."))]  # noqa: SIM118
        assert any(k.startswith("critic_optim.") for k in critic_keys)
        for k in critic_keys:  # the discriminators and their optimizer resumed too
            torch.testing.assert_close(fa.get_tensor(k), fb.get_tensor(k), atol=1e-5, rtol=1e-4, msg=k)
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 12]
    assert all({"mel", "stft", "adv", "fm", "critic"} <= set(r) for r in rows)

    longer = TrainConfig(steps=14, save_every=6, **FAST)
    with pytest.raises(CheckpointError, match="with an adversary"):
        train_vocoder(tiny_corpus, tmp_path / "a", None, longer, resume=True)
    plain = train_vocoder(tiny_corpus, tmp_path / "c", VocosConfig(**TINY), cfg)
    with pytest.raises(CheckpointError, match="without an adversary"):
        train_vocoder(tiny_corpus, plain, None, longer, resume=True, adversarial=True)
