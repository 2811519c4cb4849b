"""model.duration + training.trainers.duration: checkpoints, prediction rules (speed, minimums, prompts), prompt
alignment, and a short training run on a manifest made with espeak-ng."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from model import espeak
from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from model.duration import (
    DurationConfig,
    DurationError,
    DurationModel,
    align_prompt_by_durations,
    rescaled_prompt_durations,
)
from model.errors import CheckpointError, ConfigError
from model.text import PhoneVocab
from training.data.cuts import ManifestError
from training.data.manifest import read_manifest
from training.tasks.masking import pretraining_masks
from training.trainers.aligner import compare_prompt_aligners
from training.trainers.duration import (
    DurationObjective,
    PhoneDurationDataset,
    collate_phones,
    rows_with_phones,
    train_duration,
)
from training.trainers.trainer import TrainConfig

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Whatever you do, don't panic; it's only a test!",
    "Is this the real life, or is it just fantasy?",
    "She sells sea shells by the sea shore.",
]
VOCAB = PhoneVocab.default()


def debug_config(**overrides) -> DurationConfig:
    return DurationConfig(**{"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64, "conv_kernel": 3, "dropout": 0.0,
                             **overrides})


def constant_model(frames: float) -> DurationModel:
    """A model that predicts `frames` for every phone, whatever the context."""
    torch.manual_seed(0)
    model = DurationModel(debug_config())
    with torch.no_grad():
        model.net.out.weight.zero_()
        model.net.out.bias.fill_(math.log1p(frames))
    return model


@pytest.fixture(scope="module")
def espeak_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four espeak-ng sentences at two rates, written as audio + manifest rows with phones, plus a row without."""
    try:
        espeak.initialize()
    except espeak.EspeakError as e:
        pytest.skip(f"libespeak-ng unavailable: {e}")
    root = tmp_path_factory.mktemp("espeak_corpus")
    rows = []
    for i, (text, rate) in enumerate((t, r) for t in SENTENCES for r in (140, 220)):
        result = espeak.synthesize(text, "en-us", rate=rate)
        sf.write(root / f"{i}.wav", result.wav, result.sample_rate)
        rows.append({"audio": f"{i}.wav", "duration": result.duration, "text": text,
                     "phones": [[p.symbol, p.start, p.end] for p in result.phones]})
    rows.append({"audio": "0.wav", "duration": rows[0]["duration"], "text": SENTENCES[0]})  # e.g. a flite row
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "train.jsonl"


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DurationModel(debug_config())
    model.config.extra["note"] = "kept"
    model.save_pretrained(tmp_path / "dur")
    loaded = DurationModel.from_pretrained(tmp_path / "dur")
    assert loaded.config == model.config and loaded.vocab == VOCAB
    assert json.loads((tmp_path / "dur" / CONFIG_FILE).read_text())["kind"] == "duration"
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, loaded.net.state_dict()[key])
    ids = torch.tensor(VOCAB.encode(["_", "h", "@", "l", "oU", "_:"]))
    model.net.eval()
    assert torch.equal(model.predict_log(ids[None]), loaded.predict_log(ids[None]))


def test_loading_is_strict(tmp_path: Path) -> None:
    DurationModel(debug_config()).save_pretrained(tmp_path / "dur")
    weights = load_file(tmp_path / "dur" / WEIGHTS_FILE)
    config = json.loads((tmp_path / "dur" / CONFIG_FILE).read_text())
    cases = {
        "missing keys": (config, {k: v for k, v in weights.items() if not k.startswith("out.")}),
        "unexpected keys": (config, {**weights, "extra.weight": torch.zeros(1)}),
        "shape mismatch": ({**config, "vocab": [*config["vocab"], "XX"]}, weights),
        "kind is 'vocos'": ({**config, "kind": "vocos"}, weights),
        "unknown keys": ({**config, "dimm": 3}, weights),
    }
    for i, (message, (cfg, state)) in enumerate(cases.items()):
        directory = tmp_path / f"bad{i}"
        directory.mkdir()
        (directory / CONFIG_FILE).write_text(json.dumps(cfg))
        save_file(state, directory / WEIGHTS_FILE)
        with pytest.raises(CheckpointError, match=message):
            DurationModel.from_pretrained(directory)
    with pytest.raises(CheckpointError):
        DurationModel.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ConfigError):
        DurationConfig(dim=30, heads=4)


def test_speed_scales_predictions() -> None:
    model = constant_model(9.0)
    ids = torch.tensor(VOCAB.encode(["_", "h", "@", "l", "oU", "s", "t", "_:"] * 5))
    normal, fast, slow = (model.predict(ids, speed=s) for s in (1.0, 2.0, 0.5))
    assert normal.tolist() == [9] * len(ids)
    assert abs(int(fast.sum()) - 4.5 * len(ids)) <= 1 and set(fast.tolist()) <= {4, 5}  # cumulative rounding
    assert int(slow.sum()) == 18 * len(ids)
    for bad in (0, -1.0, 10.0, True):
        with pytest.raises(DurationError, match="speed"):
            model.predict(ids, speed=bad)


def test_phones_get_at_least_one_frame_and_prompts_are_kept() -> None:
    model = constant_model(0.0)  # predicts nothing
    symbols = ["_", "h", "@", "_:", "l", "oU", "_"]
    ids = torch.tensor(VOCAB.encode(symbols))
    frames = model.predict(ids)
    assert frames.dtype == torch.int64
    assert [int(f) for f, s in zip(frames, symbols, strict=True) if not s.startswith("_")] == [1, 1, 1, 1]
    assert [int(f) for f, s in zip(frames, symbols, strict=True) if s.startswith("_")] == [0, 0, 0]
    given = torch.tensor([3, 7, 0, 20, 0, 0, 0])
    mask = torch.tensor([True, True, True, True, False, False, False])
    out = model.predict(ids, given, mask)
    assert out[:4].tolist() == [3, 7, 0, 20] and out[4:].tolist() == [1, 1, 0]  # the prompt's own durations stay
    with pytest.raises(DurationError, match="shape"):
        model.predict(ids, given[:3], mask)
    with pytest.raises(DurationError, match="together"):
        model.predict(ids, given)


def test_batched_prediction_equals_single_and_padding_is_zero() -> None:
    torch.manual_seed(1)
    model = DurationModel(debug_config())
    torch.nn.init.normal_(model.net.out.weight, std=0.5)
    short = VOCAB.encode(["_", "h", "@", "l", "oU", "_:"])
    long = VOCAB.encode(["_", "w", "3:", "l", "d", "_:", "_", "s", "eI", "_"])
    batch = torch.zeros(2, len(long), dtype=torch.long)
    batch[0, : len(short)] = torch.tensor(short)
    batch[1] = torch.tensor(long)
    out = model.predict(batch)
    assert out.shape == (2, len(long)) and (out[0, len(short):] == 0).all()
    assert out[0, : len(short)].tolist() == model.predict(short).tolist()
    assert out[1].tolist() == model.predict(long).tolist()


def test_prompt_alignment_by_rescaled_durations() -> None:
    model = constant_model(5.0)
    symbols = ["_", "h", "@", "l", "oU", "_:", "_"]
    labels = align_prompt_by_durations(symbols, 60, model)
    assert labels.shape == (60,) and labels.dtype == np.int64
    runs = [int(i) for k, i in enumerate(labels) if k == 0 or labels[k - 1] != i]
    assert runs == VOCAB.encode(symbols)  # every phone present, in order (all predicted equal, so all get frames)
    durations = rescaled_prompt_durations(VOCAB.encode(symbols), 60, model)
    assert durations.sum() == 60 and durations.min() >= 1
    zero = constant_model(0.0)  # pauses may vanish, phones keep >= 1 frame
    with pytest.warns(UserWarning, match="transcript predicts"):  # 4 frames where it predicts none
        tight = rescaled_prompt_durations(VOCAB.encode(symbols), 4, zero)
    assert tight.sum() == 4 and (tight[1:5] == 1).all()
    with pytest.raises(DurationError, match="does the transcript match"):
        align_prompt_by_durations(symbols, 3, model)
    with pytest.warns(UserWarning, match="does the transcript match"):
        align_prompt_by_durations(symbols, 600, model)


def test_masks_cover_70_to_100_percent_in_spans() -> None:
    rng = np.random.default_rng(0)
    cfg = debug_config(p_uncond=0.0)
    masks = pretraining_masks(rng, [40, 25, 8], 40, cfg)
    assert masks.shape == (3, 40) and not masks[1, 25:].any() and not masks[2, 8:].any()
    for row, n in zip(masks, [40, 25, 8], strict=True):
        assert 0.7 * n - 1 <= int(row.sum()) <= n


def test_training_lowers_the_masked_loss(espeak_manifest: Path, tmp_path: Path) -> None:
    rows = rows_with_phones(read_manifest(espeak_manifest))
    assert len(rows) == 8  # the row without phones is skipped
    config = debug_config()
    torch.manual_seed(0)
    before_model = DurationModel(config)
    dataset = PhoneDurationDataset(VOCAB, config.fps)
    batch = collate_phones([dataset.item(row.cut, 0) for row in rows])
    masked = pretraining_masks(np.random.default_rng(123), batch["lengths"].tolist(), batch["phones"].shape[1], config)
    objective = DurationObjective(config)
    with torch.no_grad():
        before = float(objective.loss(before_model.net.eval(), batch, masked))
    train = TrainConfig(steps=40, lr=3e-3, warmup=5, save_every=1000, log_every=20, precision="fp32", device="cpu",
                        num_workers=0, ema_decay=0.9)
    out = train_duration(espeak_manifest, tmp_path / "run", config=config, train=train, batch_phones=128)
    trained = DurationModel.from_pretrained(out)
    with torch.no_grad():
        after = float(objective.loss(trained.net, batch, masked))
    assert after < 0.5 * before, (before, after)
    assert trained.config.extra["training"]["step"] == 40 and trained.config.extra["data"]["utterances"] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 40-step model may still be far off the prompt's length
        report = compare_prompt_aligners(rows, None, trained)
    assert report["utterances"] == 8 and 0.0 <= report["rescaled_durations"]["mean"] <= 1.0
    assert "forced_aligner" not in report
    symbols = [p[0] for p in rows[0].meta["phones"]]
    frames = trained.predict(VOCAB.encode(symbols))
    assert all(f >= 1 for f, s in zip(frames.tolist(), symbols, strict=True) if not s.startswith("_"))


def test_a_manifest_without_phones_is_an_error(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="phone alignments"):
        train_duration(tiny_corpus, tmp_path / "run", config=debug_config(), train=TrainConfig(steps=1))
