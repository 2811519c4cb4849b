import math

import pytest
import torch

from model.config import FlowConfig
from model.errors import ConfigError
from model.flow import FlowMatching, PackedRows, seeded_noise
from model.solvers import SOLVERS, guided_evaluations, integrate, num_steps, step_times


def test_path_endpoints_and_target():
    flow = FlowMatching(FlowConfig(sigma_min=1e-5))
    x0, x1 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    xt0, u = flow.path(x0, x1, torch.zeros(2))
    torch.testing.assert_close(xt0, x0)
    xt1, _ = flow.path(x0, x1, torch.ones(2))
    torch.testing.assert_close(xt1, x1 + 1e-5 * x0)
    torch.testing.assert_close(u, x1 - (1 - 1e-5) * x0)
    # u is the time derivative of x_t
    t, h = torch.full((2,), 0.4), 1e-3
    fwd, _ = flow.path(x0, x1, t + h)
    back, _ = flow.path(x0, x1, t - h)
    torch.testing.assert_close((fwd - back) / (2 * h), u, atol=1e-3, rtol=1e-3)


class FrameLocalNet(torch.nn.Module):
    """A velocity network that looks at each frame alone, so a target frame can only reach the loss through its own
    error term (a Transformer would also see it through attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(80, 80)

    def forward(self, x, t, cond, mask):
        return self.lin(x) * t[:, None, None]


def _loss(net, x1, mask, loss_mask):
    flow = FlowMatching(FlowConfig())
    return flow.loss(net, x1, torch.zeros_like(x1), mask, loss_mask, generator=torch.Generator().manual_seed(0))


def test_loss_counts_masked_real_frames_only():
    torch.manual_seed(0)
    net = FrameLocalNet()
    x1 = torch.randn(2, 40, 80)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False  # padding
    loss_mask = torch.zeros(2, 40, dtype=torch.bool)
    loss_mask[:, 10:25] = True
    loss_mask[1, 28:] = True  # partly over padding: the padded frames must not count
    base = _loss(net, x1, mask, loss_mask)

    outside = x1.clone()
    outside[:, :10] += 5.0  # unmasked context frames
    outside[1, 30:] = 1e4  # padding
    torch.testing.assert_close(_loss(net, outside, mask, loss_mask), base)

    inside = x1.clone()
    inside[0, 12] += 5.0
    assert _loss(net, inside, mask, loss_mask) > base + 1e-3


def test_seeded_noise_depends_only_on_seed_and_length():
    a = seeded_noise([5], 3, [7])
    b = seeded_noise([9, 5], 3, [1, 7])
    torch.testing.assert_close(b[1, :5], a[0])
    assert torch.all(b[1, 5:] == 0)
    assert not torch.allclose(seeded_noise([5], 3, [8]), a)


@pytest.mark.parametrize("solver", ["midpoint", "heun", "rk4"])
def test_solvers_agree_on_a_smooth_field(solver):
    """dx/dt = -x (1 + cos 2 pi t) has x(1) = x0 / e. Euler at 2,000 steps and the higher-order solvers at 32 NFE
    land on it; at the same budget the higher-order solver is far closer than Euler."""

    def v(x, t):
        return -x * (1 + torch.cos(2 * math.pi * t))[:, None, None]

    x0 = torch.randn(3, 4, 2, dtype=torch.float64)
    exact = x0 / math.e
    euler = integrate(v, x0, solver="euler", nfe=2000)
    higher = integrate(v, x0, solver=solver, nfe=32)
    torch.testing.assert_close(euler, exact, atol=2e-3, rtol=0)
    torch.testing.assert_close(higher, exact, atol=2e-3, rtol=0)
    euler32 = integrate(v, x0, solver="euler", nfe=32)
    assert (higher - exact).abs().max() * 5 < (euler32 - exact).abs().max()


def test_nfe_to_steps_and_bad_solver():
    assert num_steps("euler", 32) == 32
    assert num_steps("midpoint", 32) == 16
    assert num_steps("rk4", 2) == 1
    assert set(SOLVERS) == {"euler", "midpoint", "heun", "rk4"}
    with pytest.raises(ConfigError):
        num_steps("dopri5", 8)
    with pytest.raises(ConfigError):
        num_steps("euler", 0)


class CondNet(torch.nn.Module):
    """v = lin(x) t + cond: guidance with weight w turns the condition's share into w * cond."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x, t, cond, mask):
        return self.lin(x) * t[:, None, None] + cond


def test_each_row_is_guided_at_the_evaluations_the_host_names_with_its_own_weight():
    torch.manual_seed(0)
    net, flow = CondNet(), FlowMatching(FlowConfig())
    x, cond = torch.randn(3, 4, 3), torch.randn(3, 4, 3)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 3:] = False
    batch = PackedRows(net, cond, mask, [4, 4, 3], [3.0, 1.0, 2.0], {})
    t, dt = torch.tensor([0.2, 0.6, 0.0]), torch.tensor([0.1, 0.2, 0.5])
    # midpoint: row 0 guided at its first evaluation only, row 2 at both, row 1 never
    out = flow.step(net, x, t, dt, batch, solver="midpoint", guided=[(0, 2), (2,)])
    with torch.no_grad():
        for i, (w1, w2) in enumerate([(3.0, 1.0), (1.0, 1.0), (2.0, 2.0)]):
            keep = mask[i, :, None].float()

            def v(x, t, w, i=i, keep=keep):
                return (net.lin(x) * t + w * cond[i]) * keep

            half = x[i] + dt[i] / 2 * v(x[i], t[i], w1)
            torch.testing.assert_close(out[i], x[i] + dt[i] * v(half, t[i] + dt[i] / 2, w2))
    with pytest.raises(ValueError, match="evaluates 2 times"):
        flow.step(net, x, t, dt, batch, solver="midpoint", guided=[()])


def test_guided_evaluations_follow_the_grid_and_guidance_until():
    grid = step_times(4).tolist()  # 0, 0.25, 0.5, 0.75, 1
    assert guided_evaluations("midpoint", grid, 1, 2.0, 0.5) == (True, True)  # 0.25, 0.375
    assert guided_evaluations("midpoint", grid, 2, 2.0, 0.5) == (False, False)  # 0.5 is not below 0.5
    assert guided_evaluations("heun", grid, 1, 2.0, 0.5) == (True, False)  # 0.25, 0.5
    assert guided_evaluations("rk4", grid, 0, 1.0, 1.0) == (False,) * 4  # weight 1: nothing to guide
