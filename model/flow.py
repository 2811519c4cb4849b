"""Conditional flow matching: the optimal-transport path, the masked loss, and the guided, seeded sampler.

The flow is a small object apart from the network: it knows how to noise data and integrate velocities; the
network only maps (x_t, t, condition) to a velocity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .config import FlowConfig
from .solvers import SOLVERS, guided_evaluations, num_steps, row_times, step_times


def seeded_noise(lengths: Sequence[int], dim: int, seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Gaussian noise (B, max(lengths), dim), each sample drawn from its own CPU generator.

    The noise of a request depends only on its seed and length, never on the batch it lands in or the device.
    """
    out = torch.zeros(len(lengths), max(lengths), dim)
    for i, (n, seed) in enumerate(zip(lengths, seeds, strict=True)):
        gen = torch.Generator().manual_seed(int(seed))
        out[i, :n] = torch.randn(n, dim, generator=gen)
    return to_device(out, device)


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """A tensor on ``device``; from the host to CUDA without waiting for the device: through pinned memory,
    asynchronously (a copy from pageable memory would synchronise the stream)."""
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
        """A flow time per sample t (B,) ~ U(0, 1) (a student: one of its ``train_times``) and Gaussian noise x0
        shaped like x1 (times ``prior_scale``)."""
        t = torch.rand(x1.shape[0], device=x1.device, generator=generator)
        if self.cfg.train_times:
            times = torch.tensor(self.cfg.train_times, device=x1.device, dtype=t.dtype)
            t = times[(t * len(times)).long().clamp_max(len(times) - 1)]
        return t, self.cfg.prior_scale * torch.randn(x1.shape, device=x1.device, generator=generator)

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
        """Generate x1 (B, T, x_dim) given cond (B, T, C) and mask (B, T) (each row's frames first): ``start``,
        then ``step`` until every row reaches t = 1, then ``finish``. The service's live batches run the same
        three calls, a step at a time.

        Guidance w mixes velocities v_u + w (v_c - v_u) (w = 1: plain conditional, no cost) while t is below
        ``guidance_until`` (1: the whole path; guidance matters most early, so stopping it at t = 0.5 saves a
        quarter of the evaluations). The unconditional branch sees a zero condition and ``uncond_kwargs`` (e.g.
        no phones; zeros by default).
        """
        lengths = [int(n) for n in mask.sum(dim=1).tolist()]  # once, before the steps
        x = self.start(lengths, x_dim, seeds, cond.device, self.cfg.prior_scale)
        steps = num_steps(solver, nfe)
        grid = step_times(steps, sway=sway)
        times, grids = grid.tolist(), grid.to(cond.device).expand(len(lengths), -1)
        batch = PackedRows(net, cond, mask, lengths, [guidance] * len(lengths), net_kwargs, uncond_kwargs)
        everyone = tuple(range(len(lengths)))
        for k in range(steps):
            t, dt = row_times(grids, torch.full((len(lengths),), k, dtype=torch.long, device=cond.device))
            guided = [everyone if g else () for g in guided_evaluations(solver, times, k, guidance, guidance_until)]
            x = self.step(net, x, t, dt, batch, solver=solver, guided=guided)
        return self.finish(x, mask, known, known_mask)

    @staticmethod
    def start(lengths: Sequence[int], x_dim: int, seeds: Sequence[int], device: torch.device | str = "cpu",
              prior_scale: float = 1.0) -> Tensor:
        """The seeded noise x0 (B, max(lengths), x_dim) the ODE starts from (each row from its own seed), times the
        model's ``prior_scale``. The ODE state stays float32 whatever the network's dtype: only the velocity is
        computed in bf16/fp16."""
        noise = seeded_noise(lengths, x_dim, seeds, device)
        return noise if prior_scale == 1.0 else prior_scale * noise

    @torch.no_grad()
    def step(self, net: nn.Module, x: Tensor, t: Tensor, dt: Tensor, batch: PackedRows, *, solver: str,
             guided: Sequence[tuple[int, ...]]) -> Tensor:
        """One solver step: x (B, T, x_dim) of rows at times t (B,) -> x at t + dt (B,), each row on its own grid.

        ``guided`` holds, for each of the solver's evaluations in order, the rows (host indices) that take
        classifier-free guidance there, v_u + w (v_c - v_u) with their own weight w (`PackedRows`); every other
        row is plain conditional. Each evaluation is one network call (`PackedRows.call`): the unguided rows once,
        the guided ones twice (a doubled batch when every row is guided). The network sees x in the
        condition's dtype (the network's compute dtype); x itself stays in its own. Padded frames stay 0. Nothing
        here reads a device value back: which rows are guided, and every shape, are known on the host.
        """
        step_fn, offsets = SOLVERS[solver]
        if len(guided) != len(offsets):
            raise ValueError(f"{solver} evaluates {len(offsets)} times a step; got {len(guided)} guided sets")
        keep = batch.mask[..., None].to(x.dtype)
        evaluations = iter(guided)

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            call = batch.call(next(evaluations))
            xs, ts = (x, t) if call.rows is None else (x.index_select(0, call.rows), t.index_select(0, call.rows))
            v = net(xs.to(call.cond.dtype), ts, call.cond, call.mask, **call.kwargs).float()
            if call.guided is not None:
                v, v_u = v[: x.shape[0]], v[x.shape[0] :]
                v = v.index_copy(0, call.guided, v_u + call.weights * (v.index_select(0, call.guided) - v_u))
            return v.to(x.dtype) * keep

        return step_fn(velocity, x, t, dt.to(x.dtype))

    @staticmethod
    def finish(x: Tensor, mask: Tensor, known: Tensor | None = None, known_mask: Tensor | None = None) -> Tensor:
        """Rows at t = 1 -> output (B, T, x_dim): frames where known_mask (B, T) is True pasted back from
        ``known``, padding zeroed."""
        if known is not None and known_mask is not None:
            x = torch.where(known_mask[..., None], known.to(x.dtype), x)
        return x * mask[..., None].to(x.dtype)


@dataclass(frozen=True)
class NetCall:
    """The fixed inputs of one evaluation's network call over a packed batch of B rows, G of them guided: every row
    conditional, then the guided rows again, unconditional."""

    cond: Tensor  # (B + G, T, C): the rows' conditions, then zeros for the unconditional pass
    mask: Tensor  # (B + G, T)
    kwargs: dict[str, Any]  # per-frame network inputs (B + G, T, ...) and, for networks that take one, the attention
    rows: Tensor | None = None  # (B + G,) long: the packed row each batch row reads its state from; None: 0..B-1
    guided: Tensor | None = None  # (G,) long: the guided rows
    weights: Tensor | None = None  # (G, 1, 1) float32: their guidance weights


class PackedRows:
    """The network inputs of a padded batch that stay fixed while its rows do: cond (B, T, C) in the network's
    dtype, mask (B, T) (each row's frames first), the per-frame inputs ``net_kwargs`` (B, T, ...) and what the
    unconditional branch sees instead (``uncond_kwargs``, zeros by default), each row's guidance weight and frame
    count on the host.

    ``call(guided)`` gives an evaluation's network inputs for a set of guided rows; they are built on first use
    (from host values: no device read) and kept for the next steps, so a live batch builds its masks, attention
    bias and index tensors once per membership change and per set of guided rows, not per step.
    """

    KEPT_CALLS = 4  # sets of guided rows kept: all, none, and those while rows cross their guidance_until

    def __init__(self, net: nn.Module, cond: Tensor, mask: Tensor, lengths: Sequence[int], guidance: Sequence[float],
                 net_kwargs: dict[str, Tensor], uncond_kwargs: dict[str, Any] | None = None) -> None:
        self.net, self.cond, self.mask = net, cond, mask
        self.lengths, self.guidance = tuple(int(n) for n in lengths), tuple(float(w) for w in guidance)
        self.net_kwargs = net_kwargs
        self.uncond = {k: (uncond_kwargs or {}).get(k, torch.zeros_like(v)) for k, v in net_kwargs.items()}
        self._calls: dict[tuple[int, ...], NetCall] = {}

    def call(self, guided: tuple[int, ...]) -> NetCall:
        call = self._calls.pop(guided, None) or self._build(guided)
        self._calls[guided] = call  # most recently used last
        while len(self._calls) > self.KEPT_CALLS:
            self._calls.pop(next(iter(self._calls)))
        return call

    def _build(self, guided: tuple[int, ...]) -> NetCall:
        if not guided:
            return NetCall(self.cond, self.mask, {**self.net_kwargs, **self._attention(self.mask, self.lengths)})
        dev, b = self.cond.device, len(self.lengths)
        g = to_device(torch.tensor(guided, dtype=torch.long), dev)
        rows = torch.cat([torch.arange(b, device=dev), g])
        cond = torch.cat([self.cond, self.cond.new_zeros(len(guided), *self.cond.shape[1:])])
        mask = self.mask.index_select(0, rows)
        kwargs = {k: torch.cat([v, self.uncond[k].index_select(0, g)]) for k, v in self.net_kwargs.items()}
        weights = to_device(torch.tensor([self.guidance[i] for i in guided]), dev)[:, None, None]
        lengths = self.lengths + tuple(self.lengths[i] for i in guided)
        return NetCall(cond, mask, {**kwargs, **self._attention(mask, lengths)}, rows, g, weights)

    def _attention(self, mask: Tensor, lengths: tuple[int, ...]) -> dict[str, Any]:
        """The network's attention bias for these rows, if it takes one (`SpeechFlowTransformer.attention_bias`),
        in the dtype it computes in."""
        build = getattr(self.net, "attention_bias", None)
        if build is None:
            return {}
        device = mask.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.cond.dtype
        return {"attention": build(mask, dtype, lengths)}
