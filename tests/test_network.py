import pytest
import torch

from model.config import PRESETS, ModelConfig, NetworkConfig, preset
from model.errors import ConfigError
from model.modeling import SpeechFlowModel
from model.network import SpeechFlowTransformer, alibi_slopes, aligned, kernel_layout


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


@pytest.mark.parametrize("attention", ["rows", "mask"])
def test_a_padded_batch_attends_in_one_call_per_layer_or_row_by_row_alike(debug_model, monkeypatch, attention):
    net = debug_model.net
    net.padded_attention = attention
    gen = torch.Generator().manual_seed(2)
    lengths = [37, 5, 60]
    x, cond = torch.randn(3, 60, 80, generator=gen) * 5, torch.randn(3, 60, 80, generator=gen) * 5  # garbage pads
    t = torch.tensor([0.1, 0.5, 0.9])
    mask = torch.arange(60)[None] < torch.tensor(lengths)[:, None]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    out = net(x, t, cond, mask, attention=net.attention_bias(mask, lengths=lengths))
    assert len(calls) == net.cfg.depth * (1 if attention == "mask" else len(lengths))
    assert torch.isfinite(out).all()  # padded query positions too: the time token is a key every row can see
    for i, n in enumerate(lengths):
        alone = net(x[i : i + 1, :n], t[i : i + 1], cond[i : i + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-4)
    # without host lengths (training) the padding comes from the mask tensor: one masked call per layer
    calls.clear()
    torch.testing.assert_close(net(x, t, cond, mask)[mask], out[mask], atol=1e-5, rtol=1e-4)
    assert len(calls) == net.cfg.depth


def test_an_aligned_bias_has_the_same_values_and_kernel_friendly_strides():
    bias = torch.randn(3, 2, 21, 21)
    out = aligned(bias, 16)
    assert torch.equal(out, bias) and out.stride()[-1] == 1
    assert all(stride % 16 == 0 for stride in out.stride()[:-1])
    q = torch.randn(3, 2, 21, 8)
    torch.testing.assert_close(torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=out),
                               torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=bias))
    assert kernel_layout(bias) is bias  # off CUDA: as it is
