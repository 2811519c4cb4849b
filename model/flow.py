"""Conditional flow matching: the optimal-transport path, the masked loss, and the guided, seeded sampler.

The flow is a small object apart from the network: it knows how to noise data and integrate velocities; the
network only maps (x_t, t, condition) to a velocity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .config import FlowConfig
from .solvers import advance, num_steps, step_times


def seeded_noise(lengths: Sequence[int], dim: int, seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Gaussian noise (B, max(lengths), dim), each sample drawn from its own CPU generator.

    The noise of a request depends only on its seed and length, never on the batch it lands in or the device.
    """
    out = torch.zeros(len(lengths), max(lengths), dim)
    for i, (n, seed) in enumerate(zip(lengths, seeds, strict=True)):
        gen = torch.Generator().manual_seed(int(seed))
        out[i, :n] = torch.randn(n, dim, generator=gen)
    return out.to(device)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, T, D) values over the frames where mask (B, T) is True."""
    weights = mask[..., None].to(values.dtype)
    return (values * weights).sum() / (weights.sum() * values.shape[-1]).clamp_min(1.0)


class FlowMatching:
    """OT path x_t = (1 - (1 - s) t) x0 + t x1 with target u = x1 - (1 - s) x0 (s = sigma_min)."""

    def __init__(self, cfg: FlowConfig) -> None:
        self.cfg = cfg

    def path(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x0, x1 (B, T, D), t (B,) -> (x_t, target velocity), both (B, T, D)."""
        s = self.cfg.sigma_min
        tb = t[:, None, None]
        return (1 - (1 - s) * tb) * x0 + tb * x1, x1 - (1 - s) * x0

    def loss(
        self,
        net: nn.Module,
        x1: Tensor,
        cond: Tensor,
        mask: Tensor,
        loss_mask: Tensor,
        generator: torch.Generator | None = None,
        **net_kwargs: Any,
    ) -> Tensor:
        """Mean squared velocity error on the frames of ``loss_mask`` (B, T) (masked and not padding) only.

        x1 (B, T, D) target features, cond (B, T, C) condition, mask (B, T) True = real frame.
        """
        return masked_mean(self.squared_error(net, x1, cond, mask, generator, **net_kwargs), loss_mask & mask)

    def squared_error(
        self,
        net: nn.Module,
        x1: Tensor,
        cond: Tensor,
        mask: Tensor,
        generator: torch.Generator | None = None,
        **net_kwargs: Any,
    ) -> Tensor:
        """Per-element squared error (B, T, D) at a random time per sample; tasks reduce it their own way."""
        t, x0 = self.draw(x1, generator)
        return self.velocity_error(net, x1, x0, t, cond, mask, **net_kwargs)

    def draw(self, x1: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A flow time per sample t (B,) ~ U(0, 1) and Gaussian noise x0 shaped like x1."""
        t = torch.rand(x1.shape[0], device=x1.device, generator=generator)
        return t, torch.randn(x1.shape, device=x1.device, generator=generator)

    def velocity_error(
        self, net: nn.Module, x1: Tensor, x0: Tensor, t: Tensor, cond: Tensor, mask: Tensor, **net_kwargs: Any
    ) -> Tensor:
        """(v(x_t, t | cond) - u)^2 per element, (B, T, D), in float32."""
        x_t, target = self.path(x0, x1, t)
        v = net(x_t, t, cond, mask, **net_kwargs)
        return (v.float() - target) ** 2

    @torch.no_grad()
    def sample(
        self,
        net: nn.Module,
        cond: Tensor,
        mask: Tensor,
        *,
        x_dim: int,
        seeds: Sequence[int],
        nfe: int = 32,
        solver: str = "midpoint",
        guidance: float = 1.0,
        guidance_until: float = 1.0,
        sway: float = 0.0,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
        uncond_kwargs: dict[str, Any] | None = None,
        **net_kwargs: Any,
    ) -> Tensor:
        """Generate x1 (B, T, x_dim) given cond (B, T, C) and mask (B, T): ``start``, then ``step`` until every row
        reaches t = 1, then ``finish``. The service's live batches run the same three calls, a step at a time.
        """
        lengths = [int(n) for n in mask.sum(dim=1).tolist()]
        x = self.start(lengths, x_dim, seeds, cond.device)
        steps = num_steps(solver, nfe)
        grid = step_times(steps, sway=sway)
        for k in range(steps):
            index = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            x = self.step(net, x, index, grid, cond, mask, solver=solver, guidance=guidance,
                          guidance_until=guidance_until, uncond_kwargs=uncond_kwargs, **net_kwargs)
        return self.finish(x, mask, known, known_mask)

    @staticmethod
    def start(lengths: Sequence[int], x_dim: int, seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
        """The seeded noise x0 (B, max(lengths), x_dim) the ODE starts from (each row from its own seed). The ODE
        state stays float32 whatever the network's dtype: only the velocity is computed in bf16/fp16."""
        return seeded_noise(lengths, x_dim, seeds, device)

    @torch.no_grad()
    def step(
        self,
        net: nn.Module,
        x: Tensor,
        index: Tensor,
        grid: Tensor,
        cond: Tensor,
        mask: Tensor,
        *,
        solver: str,
        guidance: float = 1.0,
        guidance_until: float = 1.0,
        uncond_kwargs: dict[str, Any] | None = None,
        **net_kwargs: Any,
    ) -> Tensor:
        """One solver step: x (B, T, x_dim) of rows at step ``index`` (B,) of ``grid`` (steps + 1,) -> x one step on.

        The network sees x in the condition's dtype (the network's compute dtype); x itself stays in its own.
        guidance w mixes velocities v_u + w (v_c - v_u) (w = 1: plain conditional, no cost) for the rows whose time
        t is below ``guidance_until`` (1: the whole path; guidance matters most early, so stopping it at t = 0.5
        saves a quarter of the evaluations); all guided rows go in one doubled batch, a mix of guided and unguided
        rows as a conditional batch plus an unconditional one of the guided rows. The unconditional branch sees a
        zero condition and ``uncond_kwargs`` (e.g. no phones). Padded frames stay 0.
        """
        keep = mask[..., None].to(x.dtype)

        def conditional(x: Tensor, t: Tensor) -> Tensor:
            return net(x.to(cond.dtype), t, cond, mask, **net_kwargs).float()

        if guidance == 1.0:

            def velocity(x: Tensor, t: Tensor) -> Tensor:
                return conditional(x, t).to(x.dtype) * keep

            return advance(solver, velocity, x, index, grid)

        uncond = {k: (uncond_kwargs or {}).get(k, torch.zeros_like(v)) for k, v in net_kwargs.items()}

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            guided = t < guidance_until
            if bool(guided.all()):  # the doubled batch is built only where it is used
                both = {k: torch.cat([v, uncond[k]]) for k, v in net_kwargs.items()}
                v_c, v_u = net(torch.cat([x, x]).to(cond.dtype), torch.cat([t, t]),
                               torch.cat([cond, torch.zeros_like(cond)]), torch.cat([mask, mask]),
                               **both).float().chunk(2)
                return (v_u + guidance * (v_c - v_u)).to(x.dtype) * keep
            v = conditional(x, t)
            if bool(guided.any()):
                g = guided.nonzero(as_tuple=True)[0]
                v_u = net(x[g].to(cond.dtype), t[g], torch.zeros_like(cond[g]), mask[g],
                          **{k: u[g] for k, u in uncond.items()}).float()
                v[g] = v_u + guidance * (v[g] - v_u)
            return v.to(x.dtype) * keep

        return advance(solver, velocity, x, index, grid)

    @staticmethod
    def finish(x: Tensor, mask: Tensor, known: Tensor | None = None, known_mask: Tensor | None = None) -> Tensor:
        """Rows at t = 1 -> output (B, T, x_dim): frames where known_mask (B, T) is True pasted back from
        ``known``, padding zeroed."""
        if known is not None and known_mask is not None:
            x = torch.where(known_mask[..., None], known.to(x.dtype), x)
        return x * mask[..., None].to(x.dtype)
