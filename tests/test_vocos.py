"""model.vocos + training.trainers.vocoder: length contract, checkpoints and strict loading, masked losses,
training/resume."""

import json
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from safetensors.torch import load_file, save_file

from model.errors import CheckpointError, ConfigError
from model.features import MelConfig
from model.modeling import SpeechFlowModel
from model.vocos import ISTFTHead, VocosConfig, VocosVocoder
from training.data.loading import BatchKey, CutBatchDataset
from training.data.manifest import open_cuts
from training.trainers.trainer import TrainConfig
from training.trainers.vocoder import MultiResolutionSTFTLoss, VocoderObjective, train_vocoder

TINY = dict(dim=32, intermediate_dim=64, layers=2)
FAST = dict(lr=2e-3, warmup=5, batch_seconds=4.0, max_seconds=1.0, log_every=10, precision="fp32", num_workers=0,
            device="cpu")


@pytest.fixture
def vocoder() -> VocosVocoder:
    torch.manual_seed(0)
    return VocosVocoder(VocosConfig(**TINY))


def _feats(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, frames, 80, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frames", [1, 2, 7, 64])
def test_output_is_exactly_frames_times_hop(vocoder, frames):
    wav = vocoder(_feats(frames).expand(2, -1, -1))
    assert wav.shape == (2, frames * 160) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all()


def test_a_padded_batch_vocodes_each_sequence_as_if_alone(vocoder):
    # the layer-scale init makes the blocks near-identity: scale them up, so the padding would leak if it could
    with torch.no_grad():
        for block in vocoder.net.blocks:
            block.gamma.fill_(1.0)
    lengths = [64, 7, 30, 1]
    feats = [_feats(n, seed=n)[0] for n in lengths]
    together = vocoder.batch(feats)
    for f, wav in zip(feats, together, strict=True):
        alone = vocoder(f[None])[0]
        assert wav.shape == alone.shape
        torch.testing.assert_close(wav, alone, atol=1e-5, rtol=1e-4)
    # the check can fail: without the mask the short rows' ends see the padding
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    unmasked = vocoder.net.head(vocoder.net.frames(padded))[1, : 7 * 160]
    assert (unmasked - together[1]).abs().max() > 1e-3


@pytest.mark.parametrize("n_fft, hop", [(640, 160), (320, 160), (64, 16)])
def test_the_batched_inverse_stft_equals_each_row_alone(n_fft, hop):
    # one overlap-add for the padded batch, each row normalised by its own frames' window envelope: a row's last
    # samples see neither the padded frames' signal nor their window weight
    head = ISTFTHead(8, n_fft, hop)
    gen = torch.Generator().manual_seed(0)
    lengths = [9, 1, 2, 31, 31]
    spec = torch.complex(torch.randn(5, n_fft // 2 + 1, 31, generator=gen), torch.randn(5, n_fft // 2 + 1, 31,
                                                                                         generator=gen))
    together = head.waveforms(spec, lengths)
    assert together.shape == (5, 31 * hop)
    for i, n in enumerate(lengths):
        alone = head.waveform(spec[i : i + 1, :, :n])[0]  # torch.istft of the row's own frames
        torch.testing.assert_close(together[i, : n * hop], alone, atol=1e-5, rtol=1e-5)
        assert torch.all(together[i, n * hop :] == 0)
    # the padded frames hold a signal: without the per-row envelope and frame mask the short rows would differ
    assert (head.waveform(spec)[0, : 9 * hop] - together[0, : 9 * hop]).abs().max() > 1e-2


def test_config_round_trip_and_validation():
    config = VocosConfig(**TINY, extra={"note": 1})
    assert VocosConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown keys"):
        VocosConfig.from_dict({**config.to_dict(), "dimm": 3})
    with pytest.raises(ConfigError, match="kind"):
        VocosConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "kind"})
    with pytest.raises(ConfigError, match="mel hop"):
        VocosConfig(hop=80)
    with pytest.raises(ConfigError, match="mel hop"):
        VocosConfig(mel=MelConfig(hop_length=200, win_length=800))


def test_save_load_round_trip_is_identical(vocoder, tmp_path):
    vocoder.save_pretrained(tmp_path / "v")
    loaded = VocosVocoder.from_pretrained(tmp_path / "v")
    assert loaded.config == vocoder.config and loaded.name == "vocos"
    torch.testing.assert_close(loaded(_feats(30)), vocoder(_feats(30)), atol=0, rtol=0)
    vocoder.save_pretrained(tmp_path / "half", dtype=torch.float16)  # the shipping copy
    torch.testing.assert_close(VocosVocoder.from_pretrained(tmp_path / "half")(_feats(30)), vocoder(_feats(30)),
                               atol=2e-2, rtol=0)


def test_strict_loading(vocoder, debug_model, tmp_path):
    vocoder.save_pretrained(tmp_path / "v")
    weights = load_file(tmp_path / "v" / "model.safetensors")
    weights.pop("head.proj.bias")
    save_file(weights, tmp_path / "v" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: head\.proj\.bias"):
        VocosVocoder.from_pretrained(tmp_path / "v")
    # A flow model is not a vocoder, and a vocoder is not a flow model.
    debug_model.save_pretrained(tmp_path / "flow")
    with pytest.raises(CheckpointError, match="not a vocoder"):
        VocosVocoder.from_pretrained(tmp_path / "flow")
    with pytest.raises(CheckpointError):
        SpeechFlowModel.from_pretrained(tmp_path / "v")


def test_stft_loss_counts_real_samples_only():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 4000, generator=gen)
    lengths = torch.tensor([4000, 2500])
    target[1, 2500:] = 0
    loss = MultiResolutionSTFTLoss()
    assert float(loss(target, target, lengths)) == 0.0
    pred = target + 0.1 * torch.randn(2, 4000, generator=gen)
    pred[1, 2500:] = 0
    assert float(loss(pred, target, lengths)) > 0
    alone = loss(pred[1:, :2500], target[1:, :2500], lengths[1:])
    # frames centred in the padding are not counted: the short item alone scores the same as inside the batch
    torch.testing.assert_close(loss(pred[1:], target[1:], lengths[1:]), alone)


def _fixed_batch(manifest: Path) -> dict[str, torch.Tensor]:
    return CutBatchDataset(max_seconds=1.0)[BatchKey(0, 0, CutSet(list(open_cuts(manifest))))]["tensors"]


def _fixed_loss(vocoder: VocosVocoder, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    objective = VocoderObjective(vocoder.config)
    with torch.no_grad():
        return {k: float(v) for k, v in objective.terms(vocoder.net, batch["wav"], batch["lengths"]).items()}


def test_training_lowers_the_loss_writes_a_vocoder_and_resumes(tiny_corpus, tmp_path):
    batch = _fixed_batch(tiny_corpus)
    torch.manual_seed(0)  # the same initial weights as train_vocoder's (seed 0)
    before = _fixed_loss(VocosVocoder(VocosConfig(**TINY)), batch)

    out = tmp_path / "voc"
    train_vocoder(tiny_corpus, out, VocosConfig(**TINY), TrainConfig(steps=40, save_every=20, **FAST))
    trained = VocosVocoder.from_pretrained(out)  # EMA weights in a loadable vocoder directory
    assert trained.config.extra["training"]["step"] == 40
    after = _fixed_loss(trained, batch)
    assert after["mel"] < 0.8 * before["mel"] and after["stft"] < before["stft"], (before, after)

    with pytest.raises(CheckpointError, match="--resume"):
        train_vocoder(tiny_corpus, out, VocosConfig(**TINY), TrainConfig(steps=50, save_every=20, **FAST))
    with pytest.raises(ConfigError, match="another config"):
        train_vocoder(tiny_corpus, out, VocosConfig(dim=48, intermediate_dim=64, layers=2),
                      TrainConfig(steps=50, **FAST), resume=True)
    train_vocoder(tiny_corpus, out, None, TrainConfig(steps=50, save_every=20, **FAST), resume=True)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40, 50]
    assert VocosVocoder.from_pretrained(out).config.extra["training"]["step"] == 50


def test_a_new_run_warm_starts_from_a_vocoder_directory(tiny_corpus, tmp_path):
    # the run state of a long vocoder training is gone with its machine; its shipped weights are where the next run
    # starts: the new run begins at those weights (its first loss is theirs, not a fresh network's)
    batch = _fixed_batch(tiny_corpus)
    first = train_vocoder(tiny_corpus, tmp_path / "a", VocosConfig(**TINY), TrainConfig(steps=30, **FAST))
    trained = _fixed_loss(VocosVocoder.from_pretrained(first), batch)
    fresh = _fixed_loss(VocosVocoder(VocosConfig(**TINY)), batch)
    warm = train_vocoder(tiny_corpus, tmp_path / "b", None, TrainConfig(steps=1, lr=1e-9, warmup=1, log_every=1,
                                                                     **{k: v for k, v in FAST.items()
                                                                        if k not in ("lr", "warmup", "log_every")}),
                         init=first)
    loaded = VocosVocoder.from_pretrained(warm)
    assert loaded.config.extra["init"] == {"from": str(first), "step": 30}
    assert _fixed_loss(loaded, batch)["mel"] == pytest.approx(trained["mel"], rel=1e-3) != fresh["mel"]
