import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.errors import CheckpointError
from model.modeling import SpeechFlowModel


def _sample(model):
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 25, 80, generator=gen)
    return model.generate(cond, torch.ones(1, 25, dtype=torch.bool), seeds=[3], nfe=4)


def test_save_load_gives_identical_outputs(debug_model, tmp_path):
    debug_model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SpeechFlowModel.from_pretrained(tmp_path / "m")
    assert loaded.config == debug_model.config
    torch.testing.assert_close(_sample(loaded), _sample(debug_model), atol=0, rtol=0)
    # fp16 shipping copy loads too and stays close
    debug_model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    assert load_file(tmp_path / "half" / "model.safetensors")["in_proj.weight"].dtype == torch.float16
    torch.testing.assert_close(_sample(SpeechFlowModel.from_pretrained(tmp_path / "half")), _sample(debug_model),
                               atol=5e-2, rtol=0)


def _edit_weights(path, edit):
    weights = load_file(path / "model.safetensors")
    edit(weights)
    save_file(weights, path / "model.safetensors")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w: w.pop("out_proj.bias"), "missing keys: out_proj.bias"),
        (lambda w: w.__setitem__("out_proj.bias_renamed", w.pop("out_proj.bias")), "unexpected keys"),
        (lambda w: w.__setitem__("out_proj.bias", torch.zeros(3)), "shape mismatch"),
    ],
)
def test_loading_fails_loudly_on_key_problems(debug_model, tmp_path, edit, message):
    debug_model.save_pretrained(tmp_path)
    _edit_weights(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        SpeechFlowModel.from_pretrained(tmp_path)


def test_loading_fails_on_bad_directories(debug_model, tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        SpeechFlowModel.from_pretrained(tmp_path)
    debug_model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["network"]["depth"] = 4  # config no longer matches the weights
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys"):
        SpeechFlowModel.from_pretrained(tmp_path)
    cfg["network"]["wings"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown keys"):
        SpeechFlowModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    (tmp_path / "config.json").write_text(json.dumps(debug_model.config.to_dict()))
    with pytest.raises(CheckpointError, match="cannot read"):
        SpeechFlowModel.from_pretrained(tmp_path)


def test_config_round_trip():
    cfg = ModelConfig(task="enhance")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# --- damaged files: one CheckpointError line naming the file -----------------------------------------------------


def _fails_naming(path, load, what: str = ""):
    """``load()`` raises a one-line CheckpointError that names ``path`` (and says ``what``)."""
    with pytest.raises(CheckpointError) as info:
        load()
    message = str(info.value)
    assert str(path) in message and "\n" not in message and what in message, message
    return message


@pytest.mark.parametrize("keep", [0, 4, 8, 100, 0.5, -1])
def test_a_truncated_weights_file_fails_naming_it(debug_model, tmp_path, keep):
    debug_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep % len(data)])
    _fails_naming(weights, lambda: SpeechFlowModel.from_pretrained(tmp_path), "truncated or corrupt")


@pytest.mark.parametrize("where", ["length", "header", "data", "last byte"])
def test_flipped_bytes_fail_naming_the_file(debug_model, tmp_path, where):
    """Anywhere, header or weights: safetensors catches a broken header, the checksum a broken weight."""
    debug_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = int.from_bytes(data[:8], "little")
    index = {"length": 0, "header": 8 + header // 2, "data": 8 + header + 1000, "last byte": len(data) - 1}[where]
    data[index] ^= 0x5A
    weights.write_bytes(bytes(data))
    _fails_naming(weights, lambda: SpeechFlowModel.from_pretrained(tmp_path))


def test_weights_written_without_a_checksum_still_load(debug_model, tmp_path):
    """Files from before the checksum (the shipped bundle) load as they did."""
    debug_model.save_pretrained(tmp_path)
    save_file(load_file(tmp_path / "model.safetensors"), tmp_path / "model.safetensors")  # no metadata
    loaded = SpeechFlowModel.from_pretrained(tmp_path)
    torch.testing.assert_close(_sample(loaded), _sample(debug_model), atol=0, rtol=0)


@pytest.mark.parametrize("text", [b"{not json", b"", b"[1, 2]", b"null", b'"model"', b"\xff\xfe\x00garbage",
                                  "truncated", "heads 0", "x_dim list", "depth text"])
def test_a_broken_config_fails_naming_it(debug_model, tmp_path, text):
    debug_model.save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    good = json.loads(config.read_text())
    edits = {"heads 0": ("heads", 0), "x_dim list": ("x_dim", [80]), "depth text": ("depth", "four")}
    if text == "truncated":
        text = config.read_bytes()[:40]
    elif text in edits:
        key, value = edits[text]
        text = json.dumps({**good, "network": {**good["network"], key: value}}).encode()
    config.write_bytes(text)
    _fails_naming(config, lambda: SpeechFlowModel.from_pretrained(tmp_path))


def test_small_models_and_bundles_fail_naming_the_damaged_file(debug_model, tmp_path):
    from model.bundle import write_bundle
    from model.duration import DurationModel
    from model.pipeline import SpeechFlowPipeline
    from tests.test_duration import debug_config

    debug_model.save_pretrained(tmp_path / "pre")
    DurationModel(debug_config()).save_pretrained(tmp_path / "dur")
    config = json.loads((tmp_path / "dur" / "config.json").read_text())
    (tmp_path / "dur" / "config.json").write_text(json.dumps({**config, "dim": [32]}))
    _fails_naming(tmp_path / "dur" / "config.json", lambda: DurationModel.from_pretrained(tmp_path / "dur"))

    bundle = write_bundle(tmp_path / "b", {"pretrain": tmp_path / "pre", "enhance": tmp_path / "pre"})
    weights = bundle / "enhance" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    _fails_naming(weights, lambda: SpeechFlowPipeline.from_pretrained(bundle, device="cpu"))
    bundle = write_bundle(tmp_path / "b2", {"pretrain": tmp_path / "pre"})
    (bundle / "bundle.json").write_text("[]")
    _fails_naming(bundle / "bundle.json", lambda: SpeechFlowPipeline.from_pretrained(bundle, device="cpu"))


def test_a_damaged_training_state_fails_naming_it(debug_model, tmp_path):
    from training.trainers.trainer import STATE_FILE, TrainConfig, Trainer

    def objective(net, batch, rng, gen):
        return net(batch["x"], torch.zeros(2), batch["x"], torch.ones(2, 5, dtype=torch.bool)).pow(2).mean()

    def loaders(start, rank, world):
        while True:
            yield {"x": torch.randn(2, 5, 80)}

    cfg = TrainConfig(steps=2, precision="fp32", num_workers=0, device="cpu", warmup=1)
    Trainer(debug_model, objective, loaders, cfg, tmp_path).fit()
    state = tmp_path / STATE_FILE
    state.write_bytes(state.read_bytes()[:-3])
    _fails_naming(state, lambda: Trainer(debug_model, objective, loaders, cfg, tmp_path).fit(resume=True))


def test_the_cli_reports_a_damaged_bundle_in_one_line(debug_model, tmp_path, capsys):
    """`speechflow enhance` and `speechflow serve` print the line and exit 2 (never a server that comes up without
    its model, never a traceback)."""
    import os
    import subprocess
    import sys

    import soundfile as sf

    from model.bundle import write_bundle
    from speechflow.cli import main
    from tests.conftest import speechlike

    debug_model.save_pretrained(tmp_path / "pre")
    bundle = write_bundle(tmp_path / "b", {"pretrain": tmp_path / "pre", "enhance": tmp_path / "pre"})
    weights = bundle / "enhance" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    sf.write(tmp_path / "in.wav", speechlike(0.5, seed=0), 16000)
    assert main(["enhance", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--bundle", str(bundle),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("speechflow enhance: error: cannot read") and str(weights) in err and "\n" not in err

    proc = subprocess.run([sys.executable, "-m", "speechflow.cli", "serve", "--bundle", str(bundle), "--device",
                           "cpu", "--port", "0"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"speechflow serve: error: cannot read {weights}") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 5e-2), (torch.bfloat16, 0.2)])
def test_half_precision_weights_save_load_and_run(debug_model, tmp_path, dtype, atol):
    """Shipped fp16/bf16 copies: stored in that dtype (checksummed as stored), loaded exactly, and runnable with the
    network in that dtype on the CPU (the ODE state stays float32)."""
    debug_model.save_pretrained(tmp_path, dtype=dtype)
    stored = load_file(tmp_path / "model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {dtype}
    loaded = SpeechFlowModel.from_pretrained(tmp_path)  # float32 copies of the rounded weights
    assert all(torch.equal(v, stored[k].float()) for k, v in loaded.net.state_dict().items())
    half = SpeechFlowModel.from_pretrained(tmp_path, dtype=dtype)
    assert half.net.in_proj.weight.dtype == dtype
    out = _sample(half)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    error = float((out - _sample(debug_model)).abs().max())
    assert 0 < error < atol, error  # it ran in the half dtype (not exactly fp32) and stayed close


def test_a_bundle_made_from_another_bundles_tts_keeps_its_built_in_voices(tmp_path):
    """`speechflow bundle --tts checkpoints/demo/tts ...` (a candidate beside the shipped model): the voices come
    along, so the new bundle speaks in them without --voices."""
    from model.bundle import write_bundle
    from model.pipeline import SpeechFlowPipeline
    from tests.conftest import DEMO_BUNDLE

    if not (DEMO_BUNDLE / "tts" / "voices").is_dir():
        pytest.skip("needs the shipped bundle checkpoints/demo")
    bundle = write_bundle(tmp_path / "b", {"tts": DEMO_BUNDLE / "tts", "duration": DEMO_BUNDLE / "tts" / "duration"})
    shipped = sorted(p.name for p in (DEMO_BUNDLE / "tts" / "voices").iterdir())
    assert sorted(p.name for p in (bundle / "tts" / "voices").iterdir()) == shipped
    assert set(SpeechFlowPipeline.from_pretrained(bundle, device="cpu").voices) == \
        set(SpeechFlowPipeline.from_pretrained(DEMO_BUNDLE, device="cpu").voices)
