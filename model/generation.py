"""Generation rows and the live batch that advances them one ODE step at a time.

A request becomes rows: an enhancement/separation window, a TTS chunk after its prompt, an infill recording. A row
carries its own condition, seed, length and known frames; its place on the ODE (step index, state) lives in the
`LiveBatch` it runs in. Rows of one (model, sampling) share a live batch: they join at t = 0 and leave at t = 1
between steps, so rows that started at different times advance together. The offline pipeline (`generate_rows`)
and the service's step loop drive the same `LiveBatch`, so a row's result depends only on the row, never on the rows
it ran next to (up to float rounding: the network masks padding, see tests/test_generation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .defaults import Sampling
from .flow import FlowMatching
from .modeling import SpeechFlowModel
from .packing import joinable
from .solvers import num_steps, step_times


@dataclass(eq=False)  # identity semantics: two rows are never "equal"
class Row:
    """One sequence to generate. ``cond`` (T, cond_dim); ``known`` (T, x_dim) with ``known_mask`` (T,) are frames
    pasted back at the end (a TTS prompt, the unmasked part of an infill); ``extras`` are per-frame network inputs
    (TTS: ``phones`` (T,) long), zero in the unconditional branch of guidance."""

    cond: Tensor
    seed: int
    known: Tensor | None = None
    known_mask: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    step: int = 0  # solver steps taken (set by the live batch)
    output: Tensor | None = None  # (T, x_dim) float32, set when the row reaches t = 1

    @property
    def frames(self) -> int:
        return int(self.cond.shape[0])


@dataclass(eq=False)
class Plan:
    """A request as generation rows plus what turns them back into audio.

    ``task`` names the model that generates the rows and ``sampling`` its settings (rows of plans with the same two
    may share a live batch). A row's piece is made as soon as it finishes: with ``vocode_from`` set, the
    waveform of its output from that frame on (TTS: the chunk after the prompt; the pipeline vocodes the rows that
    finish together in one batch), else ``piece(i, output)`` (by default the output itself). ``assemble(pieces)``
    makes the result from every row's piece, in row order. With ``chunk_fade`` set the
    pieces are consecutive audio chunks joined with that many samples of cross-fade, so they can be streamed in
    order as they finish (`model.joining.CrossfadeJoiner`).
    """

    task: str
    sampling: Sampling
    rows: list[Row]
    assemble: Callable[[list[Any]], np.ndarray]
    piece: Callable[[int, Tensor], Any] = lambda _, output: output
    vocode_from: int | None = None  # set: a row's piece is its output from this frame on, vocoded (batched)
    chunk_fade: int | None = None

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.rows)


class LiveBatch:
    """Rows of one model and one sampling setting (solver, NFE, guidance), advanced together step by step.

    ``join`` starts rows at t = 0 from their seeded noise; ``step`` moves every row one solver step from its own
    t and returns the rows that reached t = 1 (with ``output`` set; they have left); ``leave`` drops rows early
    (cancelled or expired). The padded tensors are rebuilt only when membership changes.
    """

    def __init__(self, model: SpeechFlowModel, sampling: Sampling) -> None:
        self.model = model
        self.sampling = sampling
        self.steps = num_steps(sampling.solver, sampling.steps)
        self.grid = step_times(self.steps, sway=sampling.sway).to(model.device)
        self.rows: list[Row] = []
        self._states: dict[int, Tensor] = {}  # id(row) -> (T, x_dim) state of rows not yet packed
        self._x: Tensor | None = None  # (B, T_max, x_dim) states of the packed rows, in ``rows`` order
        self._packed: list[Row] = []
        self._batch: dict[str, Tensor] = {}  # cond, mask (and known, known_mask) of the packed rows
        self._extras: dict[str, Tensor] = {}  # the packed rows' per-frame network inputs

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, rows: Sequence[Row]) -> None:
        x_dim = self.model.config.network.x_dim
        for row in rows:
            row.step, row.output = 0, None
            noise = FlowMatching.start([row.frames], x_dim, [row.seed], self.model.device)
            self._states[id(row)] = noise[0]
            self.rows.append(row)

    def leave(self, rows: Sequence[Row]) -> None:
        gone = {id(r) for r in rows}
        self._unpack()
        self.rows = [r for r in self.rows if id(r) not in gone]
        for key in gone:
            self._states.pop(key, None)

    @torch.no_grad()
    def step(self) -> list[Row]:
        """Advance every row one solver step; the rows that reached t = 1 leave and are returned."""
        if not self.rows:
            return []
        self._pack()
        assert self._x is not None
        b = self._batch
        index = torch.tensor([r.step for r in self.rows], dtype=torch.long, device=self._x.device)
        s = self.sampling
        self._x = self.model.flow.step(self.model.net, self._x, index, self.grid, b["cond"], b["mask"],
                                       solver=s.solver, guidance=s.guidance, guidance_until=s.guidance_until,
                                       **self._extras)
        for row in self.rows:
            row.step += 1
        done = [i for i, r in enumerate(self.rows) if r.step >= self.steps]
        if not done:
            return []
        finished = []
        for i in done:
            row = self.rows[i]
            n = row.frames
            known = b["known"][i : i + 1, :n] if "known" in b else None
            known_mask = b["known_mask"][i : i + 1, :n] if "known_mask" in b else None
            out = self.model.flow.finish(self._x[i : i + 1, :n], b["mask"][i : i + 1, :n], known, known_mask)
            row.output = out[0].float()
            finished.append(row)
        self.leave(finished)
        return finished

    def _unpack(self) -> None:
        """Move the packed states back to per-row tensors (before membership changes)."""
        if self._x is not None:
            for i, row in enumerate(self._packed):
                self._states[id(row)] = self._x[i, : row.frames]
        self._x, self._packed = None, []

    def _pack(self) -> None:
        if self._x is not None and self._packed == self.rows:
            return
        self._unpack()
        rows, dev = self.rows, self.model.device
        pad = torch.nn.utils.rnn.pad_sequence
        self._x = pad([self._states.pop(id(r)) for r in rows], batch_first=True)
        lengths = torch.tensor([r.frames for r in rows], device=dev)
        batch = {"cond": pad([r.cond for r in rows], batch_first=True).to(dev, self.model.dtype),
                 "mask": torch.arange(int(lengths.max()), device=dev)[None] < lengths[:, None]}
        if any(r.known is not None for r in rows):
            x_dim = self.model.config.network.x_dim
            batch["known"] = pad([r.known if r.known is not None else torch.zeros(r.frames, x_dim, device=dev)
                                  for r in rows], batch_first=True).to(dev)
            batch["known_mask"] = pad([r.known_mask if r.known_mask is not None
                                       else torch.zeros(r.frames, dtype=torch.bool, device=dev) for r in rows],
                                      batch_first=True).to(dev)
        self._extras = {name: pad([r.extras[name] for r in rows], batch_first=True).to(dev) for name in rows[0].extras}
        self._batch, self._packed = batch, list(rows)


def generate_rows(model: SpeechFlowModel, sampling: Sampling, rows: Sequence[Row], budget: int,
                  cap: int | None = None) -> list[Tensor]:
    """Run rows to t = 1 offline, in one live batch under the frame budget: rows join (longest first, so joiners
    never widen the padding) whenever finished rows make room. Returns each row's output (T, x_dim), in order."""
    live = LiveBatch(model, sampling)
    waiting = sorted(rows, key=lambda r: -r.frames)
    while waiting or len(live):
        longest = max((r.frames for r in live.rows), default=0)
        n = joinable(len(live), longest, [r.frames for r in waiting], budget, cap)
        live.join(waiting[:n])
        del waiting[:n]
        live.step()
    outputs = []
    for row in rows:
        assert row.output is not None
        outputs.append(row.output)
    return outputs
