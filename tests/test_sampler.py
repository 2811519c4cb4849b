import torch

from model.flow import FlowMatching


def _inputs(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t_max = max(lengths)
    cond = torch.randn(len(lengths), t_max, 80, generator=gen)
    mask = torch.arange(t_max)[None] < torch.tensor(lengths)[:, None]
    return cond * mask[..., None], mask


def test_alone_equals_inside_a_padded_batch(debug_model):
    cond, mask = _inputs([23, 41, 30])
    for solver in ("euler", "midpoint", "heun"):
        batch = debug_model.generate(cond, mask, seeds=[5, 6, 7], nfe=6, solver=solver)
        alone = debug_model.generate(cond[:1, :23], mask[:1, :23], seeds=[5], nfe=6, solver=solver)
        torch.testing.assert_close(batch[0, :23], alone[0], atol=1e-4, rtol=0)
        assert torch.all(batch[0, 23:] == 0)  # padding stays zero


def test_guided_alone_equals_batched(debug_model):
    cond, mask = _inputs([17, 29])
    batch = debug_model.generate(cond, mask, seeds=[1, 2], nfe=4, guidance=2.0)
    alone = debug_model.generate(cond[1:, :29], mask[1:, :29], seeds=[2], nfe=4, guidance=2.0)
    torch.testing.assert_close(batch[1], alone[0], atol=1e-4, rtol=0)


def test_seed_controls_the_sample(debug_model):
    cond, mask = _inputs([20])
    a = debug_model.generate(cond, mask, seeds=[1], nfe=4)
    torch.testing.assert_close(a, debug_model.generate(cond, mask, seeds=[1], nfe=4))
    assert not torch.allclose(a, debug_model.generate(cond, mask, seeds=[2], nfe=4))


def test_known_frames_are_returned_unchanged(debug_model):
    cond, mask = _inputs([40])
    known_mask = torch.zeros(1, 40, dtype=torch.bool)
    known_mask[0, :15] = True
    known_mask[0, 30:] = True
    known = torch.randn(1, 40, 80)
    out = debug_model.generate(cond, mask, seeds=[0], nfe=4, known=known, known_mask=known_mask)
    assert torch.equal(out[known_mask], known[known_mask])
    assert not torch.allclose(out[0, 15:30], known[0, 15:30])


def test_guidance_is_one_doubled_batch_mixing_velocities(debug_model):
    """With w = 1 the unconditional branch is skipped; with w != 1 the network sees one batch of 2B items and the
    result is v_u + w (v_c - v_u)."""
    calls = []
    net = debug_model.net

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond, mask):
            calls.append(x.shape[0])
            return net(x, t, cond, mask)

    flow: FlowMatching = debug_model.flow
    cond, mask = _inputs([12, 9])
    flow.sample(Spy(), cond, mask, x_dim=80, seeds=[0, 1], nfe=2, solver="euler", guidance=1.0)
    assert calls == [2, 2]
    calls.clear()
    guided = flow.sample(Spy(), cond, mask, x_dim=80, seeds=[0, 1], nfe=1, solver="euler", guidance=3.0)
    assert calls == [4]
    # one Euler step from t=0: x1 = x0 + v, v = v_u + 3 (v_c - v_u)
    from model.flow import seeded_noise

    x0 = seeded_noise([12, 9], 80, [0, 1])
    t = torch.zeros(2)
    v_c = net(x0, t, cond, mask)
    v_u = net(x0, t, torch.zeros_like(cond), mask)
    expected = (x0 + v_u + 3.0 * (v_c - v_u)) * mask[..., None]
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)
