import pytest
import torch

from model.config import PRESETS, ModelConfig, NetworkConfig, preset
from model.errors import ConfigError
from model.modeling import SpeechFlowModel
from model.network import SpeechFlowTransformer, alibi_slopes


def test_preset_parameter_counts():
    counts = {}
    for name in PRESETS:
        with torch.device("meta"):  # the paper-size model is never materialised
            counts[name] = SpeechFlowModel(ModelConfig(network=preset(name))).num_parameters()
    assert counts["debug"] < 0.5e6
    assert 3e6 <= counts["tiny"] <= 5e6
    assert 300e6 <= counts["base"] <= 360e6  # paper: 24 layers, 1024 dim, ~330 M
    assert counts["debug"] < counts["tiny"] < counts["small"] < counts["base"]


def test_output_shape_and_padding_invariance(debug_model):
    net = debug_model.net
    torch.manual_seed(1)
    x, cond = torch.randn(1, 37, 80), torch.randn(1, 37, 80)
    t = torch.tensor([0.3])
    alone = net(x, t, cond, torch.ones(1, 37, dtype=torch.bool))
    assert alone.shape == (1, 37, 80)
    # Same sequence inside a longer, padded batch, next to an unrelated sequence; padding holds garbage.
    xb, cb = torch.randn(2, 60, 80) * 5, torch.randn(2, 60, 80) * 5
    xb[0, :37], cb[0, :37] = x[0], cond[0]
    mask = torch.zeros(2, 60, dtype=torch.bool)
    mask[0, :37], mask[1, :] = True, True
    batched = net(xb, torch.tensor([0.3, 0.8]), cb, mask)
    torch.testing.assert_close(batched[0, :37], alone[0], atol=1e-5, rtol=1e-4)


def test_output_depends_on_time_condition_and_context(debug_model):
    net = debug_model.net
    x, cond = torch.randn(1, 20, 80), torch.randn(1, 20, 80)
    mask = torch.ones(1, 20, dtype=torch.bool)
    base = net(x, torch.tensor([0.2]), cond, mask)
    assert not torch.allclose(base, net(x, torch.tensor([0.7]), cond, mask))
    assert not torch.allclose(base, net(x, torch.tensor([0.2]), torch.zeros_like(cond), mask))
    # Attention is bidirectional: changing the last frame changes the first frame's output.
    x2 = x.clone()
    x2[0, -1] += 1.0
    assert not torch.allclose(base[0, 0], net(x2, torch.tensor([0.2]), cond, mask)[0, 0])


def test_phone_conditioning_requires_phones():
    net = SpeechFlowTransformer(NetworkConfig(dim=32, depth=2, heads=2, ffn_dim=64, conv_kernel=5, conv_groups=4,
                                              n_phones=10))
    x = torch.randn(1, 8, 80)
    mask = torch.ones(1, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="phones"):
        net(x, torch.tensor([0.5]), x, mask)
    assert net(x, torch.tensor([0.5]), x, mask, phones=torch.randint(1, 10, (1, 8))).shape == (1, 8, 80)


def test_alibi_slopes_and_invalid_configs():
    assert torch.allclose(alibi_slopes(4), torch.tensor([0.25, 0.0625, 0.015625, 0.00390625]))
    assert alibi_slopes(6).shape == (6,)
    with pytest.raises(ConfigError):
        NetworkConfig(dim=30, heads=4)
    with pytest.raises(ConfigError):
        NetworkConfig(depth=3)
    with pytest.raises(ConfigError):
        preset("huge")
