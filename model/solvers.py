"""Fixed-step ODE solvers for dx/dt = v(x, t) from t=0 (noise) to t=1 (data).

Time is a per-sample tensor (B,), so rows at different times share one batch (the service's live batches: rows join
at t = 0 and leave at t = 1 between steps); the user sets the number of function evaluations (NFE), and each solver
turns it into steps of its own order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .defaults import Sampling
from .errors import ConfigError

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x (B, T, D), t (B,)) -> v (B, T, D)


def euler_step(v: VelocityFn, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    return x + _b(dt) * v(x, t)


def midpoint_step(v: VelocityFn, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    half = x + _b(dt / 2) * v(x, t)
    return x + _b(dt) * v(half, t + dt / 2)


def heun_step(v: VelocityFn, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    k1 = v(x, t)
    k2 = v(x + _b(dt) * k1, t + dt)
    return x + _b(dt / 2) * (k1 + k2)


def rk4_step(v: VelocityFn, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    k1 = v(x, t)
    k2 = v(x + _b(dt / 2) * k1, t + dt / 2)
    k3 = v(x + _b(dt / 2) * k2, t + dt / 2)
    k4 = v(x + _b(dt) * k3, t + dt)
    return x + _b(dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def _b(s: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1) so per-sample step sizes broadcast over (B, T, D)."""
    return s[:, None, None]


# name -> (step function, where in a step each of its evaluations happens as a fraction of dt); the evaluations
# per step are len(offsets)
SOLVERS: dict[str, tuple[Callable[[VelocityFn, Tensor, Tensor, Tensor], Tensor], tuple[float, ...]]] = {
    "euler": (euler_step, (0.0,)),
    "midpoint": (midpoint_step, (0.0, 0.5)),
    "heun": (heun_step, (0.0, 1.0)),
    "rk4": (rk4_step, (0.0, 0.5, 0.5, 1.0)),
}


def network_passes(sampling: Sampling) -> int:
    """Sequences one row puts through the network over its whole path: one per evaluation, two where guidance
    applies (t < guidance_until). What the cost bounds charge a row per frame."""
    steps = num_steps(sampling.solver, sampling.steps)
    grid = step_times(steps, sway=sampling.sway).tolist()
    evaluations = len(SOLVERS[sampling.solver][1])
    guided = (guided_evaluations(sampling.solver, grid, k, sampling.guidance, sampling.guidance_until)
              for k in range(steps))
    return sum(evaluations + sum(g) for g in guided)


def guided_evaluations(solver: str, grid: Sequence[float], k: int, guidance: float,
                       guidance_until: float) -> tuple[bool, ...]:
    """Whether each network evaluation of step ``k`` on ``grid`` (steps + 1 host floats) is guided: the guidance
    weight is not 1 and the evaluation's time, grid[k] + offset * (grid[k + 1] - grid[k]), is below
    ``guidance_until``. Decided on the host, so a batch of rows at different times needs nothing from the device
    to know which rows take the unconditional pass."""
    if guidance == 1.0:
        return (False,) * len(SOLVERS[solver][1])
    t0, t1 = grid[k], grid[k + 1]
    return tuple(t0 + f * (t1 - t0) < guidance_until for f in SOLVERS[solver][1])


def num_steps(solver: str, nfe: int) -> int:
    """Steps a solver takes for a budget of ``nfe`` evaluations (at least one step)."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    if nfe < 1:
        raise ConfigError(f"nfe must be >= 1, got {nfe}")
    return max(1, nfe // len(SOLVERS[solver][1]))


def step_times(steps: int, t0: float = 0.0, sway: float = 0.0) -> Tensor:
    """The time grid (steps + 1,) of a fixed-step solve from t0 to 1; a row at step k moves from grid[k] to
    grid[k + 1]. ``sway`` in [-1, 1] bends a uniform grid u into u + sway * (cos(pi u / 2) - 1 + u) (F5-TTS's sway
    sampling): negative values take small steps early, where the flow decides the coarse structure, and large ones
    late; 0 is uniform."""
    if not -1.0 <= sway <= 1.0:
        raise ConfigError(f"sway must be in [-1, 1], got {sway}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    bent = u + sway * (torch.cos(math.pi / 2 * u) - 1 + u)
    return (t0 + (1.0 - t0) * bent).to(torch.float32)


def advance(solver: str, v: VelocityFn, x: Tensor, k: Tensor, grid: Tensor) -> Tensor:
    """One solver step for rows at their own step index k (B,) (long) on ``grid``: x (B, T, D) at t = grid[k]
    -> x at grid[k + 1]. Rows at different steps share the call; each moves by its own dt."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    t, dt = row_times(grid.to(x.device).expand(x.shape[0], -1), k)
    return SOLVERS[solver][0](v, x, t, dt.to(x.dtype))


def row_times(grids: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's time grid (B, K + 1) (a shorter grid padded at its end) and step index k (B,) (long), on the
    device -> the rows' time t = grids[k] and step dt = grids[k + 1] - t, each (B,). Device-side gathers: a batch
    stepping rows of different grids reads nothing back."""
    t = grids.gather(1, k[:, None])[:, 0]
    return t, grids.gather(1, k[:, None] + 1)[:, 0] - t


def integrate(v: VelocityFn, x0: Tensor, *, solver: str = "midpoint", nfe: int = 32, t0: float = 0.0,
              sway: float = 0.0) -> Tensor:
    """Integrate from t0 to 1 with fixed steps; x0 (B, T, D) -> x1 (B, T, D). Every row takes the same steps."""
    steps = num_steps(solver, nfe)  # validates the solver name first
    grid = step_times(steps, t0, sway)
    x = x0
    for k in range(steps):
        x = advance(solver, v, x, torch.full((x0.shape[0],), k, dtype=torch.long, device=x0.device), grid)
    return x
