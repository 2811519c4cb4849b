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
