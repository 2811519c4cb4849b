"""Generation rows and the live batch that advances them one ODE step at a time.

A request becomes rows: an enhancement/separation window, a TTS chunk after its prompt, an infill recording. A row
carries its own condition, seed, length, known frames and sampling settings; its place on the ODE (step index,
state) lives in the `LiveBatch` it runs in. Rows of one (model, solver) share a live batch, whatever their steps,
time grid and guidance: they join at t = 0 and leave at t = 1 between steps, so rows that started at different
times, on different grids, advance together. The offline pipeline (`generate_rows`)
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
from .flow import FlowMatching, PackedRows, to_device
from .modeling import SpeechFlowModel
from .packing import joinable
from .solvers import SOLVERS, guided_evaluations, num_steps, row_times, step_times


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
    sampling: Sampling | None = None  # its plan's (set by `Plan`); None: the live batch's default
    step: int = 0  # solver steps taken (set by the live batch)
    output: Tensor | None = None  # (T, x_dim) float32, set when the row reaches t = 1

    @property
    def frames(self) -> int:
        return int(self.cond.shape[0])


@dataclass(eq=False)
class Plan:
    """A request as generation rows plus what turns them back into audio.

    ``task`` names the model that generates the rows and ``sampling`` its settings, which every row without its own
    takes (rows of plans with the same task and solver may share a live batch). A row's piece is made as soon as
    it finishes: with ``vocode_from`` set, the waveform of its output from that frame on (TTS: the chunk after the
    prompt; the pipeline vocodes the rows that finish together in one batch), else ``piece(i, output)`` (by
    default the output itself). ``assemble(pieces)`` makes the result from every row's piece, in row order. With
    ``chunk_fade`` set the pieces are consecutive audio chunks joined with that many samples of cross-fade, so
    they can be streamed in order as they finish (`model.joining.CrossfadeJoiner`).
    """

    task: str
    sampling: Sampling
    rows: list[Row]
    assemble: Callable[[list[Any]], np.ndarray]
    piece: Callable[[int, Tensor], Any] = lambda _, output: output
    vocode_from: int | None = None  # set: a row's piece is its output from this frame on, vocoded (batched)
    chunk_fade: int | None = None
    # TTS: each chunk's words and phones (model.tts.WordTime), timed in seconds of the joined audio, known before
    # generation
    words: list[list[Any]] | None = None
    phones: list[list[Any]] | None = None

    def __post_init__(self) -> None:
        for row in self.rows:
            if row.sampling is None:
                row.sampling = self.sampling

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.rows)


@dataclass(frozen=True)
class RowPath:
    """A row's way from t = 0 to 1 on the host: its step count, time grid (steps + 1 floats) and guidance."""

    steps: int
    grid: tuple[float, ...]
    guidance: float
    guidance_until: float

    @classmethod
    def of(cls, s: Sampling) -> RowPath:
        steps = num_steps(s.solver, s.steps)
        return cls(steps, tuple(step_times(steps, sway=s.sway).tolist()), s.guidance, s.guidance_until)


class LiveBatch:
    """Rows of one model and one solver, advanced together step by step, each on its own path: its own steps, time
    grid (sway) and guidance, from its ``sampling`` (or the batch's default).

    ``sampling``: a `Sampling` is the default of rows without their own and names the solver; a solver name alone
    makes every row bring its own. ``join`` starts rows at t = 0 from their seeded noise (a row of another solver
    is a ValueError); ``step`` moves every row one solver step from its own t and returns the rows that reached
    t = 1 (with ``output`` set; they have left); ``leave`` drops rows early (cancelled or expired). The padded
    tensors, attention masks and time grids are rebuilt only when membership changes, and a step reads nothing
    back from the device: which rows are guided and when rows finish are decided from host values.
    """

    def __init__(self, model: SpeechFlowModel, sampling: Sampling | str) -> None:
        self.model = model
        self.sampling = sampling if isinstance(sampling, Sampling) else None
        self.solver = sampling.solver if isinstance(sampling, Sampling) else sampling
        num_steps(self.solver, 1)  # an unknown solver fails here, not at the first step
        self.rows: list[Row] = []
        self._paths: dict[int, RowPath] = {}  # id(row) -> its path
        self._states: dict[int, Tensor] = {}  # id(row) -> (T, x_dim) state of rows not yet packed
        self._x: Tensor | None = None  # (B, T_max, x_dim) states of the packed rows, in ``rows`` order
        self._packed: list[Row] = []
        self._batch: dict[str, Tensor] = {}  # mask (and known, known_mask) of the packed rows
        self._inputs: PackedRows | None = None  # the packed rows' network inputs
        self._grids: Tensor | None = None  # (B, K + 1) float32: each packed row's time grid, padded with 1
        self._k: Tensor | None = None  # (B,) long: each packed row's step index, on the device

    def __len__(self) -> int:
        return len(self.rows)

    def steps_of(self, row: Row) -> int:
        """Solver steps a row of this batch takes to reach t = 1."""
        return self._paths[id(row)].steps

    def join(self, rows: Sequence[Row]) -> None:
        paths = [RowPath.of(self._sampling_of(row)) for row in rows]  # every row checked before any joins
        x_dim = self.model.config.network.x_dim
        for row, path in zip(rows, paths, strict=True):
            row.step, row.output = 0, None
            noise = FlowMatching.start([row.frames], x_dim, [row.seed], self.model.device,
                                       self.model.config.flow.prior_scale)
            self._states[id(row)], self._paths[id(row)] = noise[0], path
            self.rows.append(row)

    def _sampling_of(self, row: Row) -> Sampling:
        s = row.sampling or self.sampling
        if s is None:
            raise ValueError(f"a row without sampling settings cannot join a live batch of {self.solver!r} rows "
                             "with no default")
        if s.solver != self.solver:
            raise ValueError(f"a {s.solver!r} row cannot join a live batch of {self.solver!r} rows")
        return s

    def leave(self, rows: Sequence[Row]) -> None:
        gone = {id(r) for r in rows}
        self._unpack()
        self.rows = [r for r in self.rows if id(r) not in gone]
        for key in gone:
            self._states.pop(key, None)
            self._paths.pop(key, None)

    @torch.no_grad()
    def step(self) -> list[Row]:
        """Advance every row one solver step; the rows that reached t = 1 leave and are returned."""
        if not self.rows:
            return []
        self._pack()
        assert self._x is not None and self._inputs is not None and self._grids is not None and self._k is not None
        t, dt = row_times(self._grids, self._k)
        self._x = self.model.flow.step(self.model.net, self._x, t, dt, self._inputs, solver=self.solver,
                                       guided=self._guided())
        self._k += 1
        for row in self.rows:
            row.step += 1
        done = [i for i, r in enumerate(self.rows) if r.step >= self._paths[id(r)].steps]
        if not done:
            return []
        finished = [self._finish(i) for i in done]
        self.leave(finished)
        return finished

    def _guided(self) -> list[tuple[int, ...]]:
        """For each of this step's evaluations, the rows (indices) it guides, from each row's step and path."""
        flags = [guided_evaluations(self.solver, p.grid, r.step, p.guidance, p.guidance_until)
                 for r, p in ((r, self._paths[id(r)]) for r in self.rows)]
        return [tuple(i for i, f in enumerate(flags) if f[j]) for j in range(len(SOLVERS[self.solver][1]))]

    def _finish(self, i: int) -> Row:
        assert self._x is not None
        b, row = self._batch, self.rows[i]
        n = row.frames
        known = b["known"][i : i + 1, :n] if "known" in b else None
        known_mask = b["known_mask"][i : i + 1, :n] if "known_mask" in b else None
        row.output = self.model.flow.finish(self._x[i : i + 1, :n], b["mask"][i : i + 1, :n], known, known_mask)[0]
        return row

    def _unpack(self) -> None:
        """Move the packed states back to per-row tensors (before membership changes)."""
        if self._x is not None:
            for i, row in enumerate(self._packed):
                self._states[id(row)] = self._x[i, : row.frames]
        self._x, self._packed, self._inputs, self._grids, self._k = None, [], None, None, None

    def _pack(self) -> None:
        if self._x is not None and self._packed == self.rows:
            return
        self._unpack()
        rows, dev = self.rows, self.model.device
        pad = torch.nn.utils.rnn.pad_sequence
        lengths = [r.frames for r in rows]
        self._x = pad([self._states.pop(id(r)) for r in rows], batch_first=True)
        mask = torch.arange(max(lengths), device=dev)[None] < to_device(torch.tensor(lengths), dev)[:, None]
        batch = {"mask": mask}
        if any(r.known is not None for r in rows):
            x_dim = self.model.config.network.x_dim
            like = next(r.known for r in rows if r.known is not None)
            known = [r.known if r.known is not None else like.new_zeros(r.frames, x_dim) for r in rows]
            known_mask = [r.known_mask if r.known_mask is not None
                          else torch.zeros(r.frames, dtype=torch.bool, device=like.device) for r in rows]
            batch["known"] = to_device(pad(known, batch_first=True), dev)
            batch["known_mask"] = to_device(pad(known_mask, batch_first=True), dev)
        extras = {name: to_device(pad([r.extras[name] for r in rows], batch_first=True), dev)
                  for name in rows[0].extras}
        cond = to_device(pad([r.cond for r in rows], batch_first=True), dev).to(self.model.dtype)
        paths = [self._paths[id(r)] for r in rows]
        self._inputs = PackedRows(self.model.net, cond, mask, lengths, [p.guidance for p in paths], extras)
        width = max(len(p.grid) for p in paths)
        self._grids = to_device(torch.tensor([p.grid + (1.0,) * (width - len(p.grid)) for p in paths]), dev)
        self._k = to_device(torch.tensor([r.step for r in rows]), dev)
        self._batch, self._packed = batch, list(rows)


def generate_rows(model: SpeechFlowModel, sampling: Sampling | str, rows: Sequence[Row], budget: int,
                  cap: int | None = None) -> list[Tensor]:
    """Run rows to t = 1 offline, in one live batch under the frame budget (``sampling`` as `LiveBatch` takes it):
    rows join (longest first, so joiners never widen the padding) whenever finished rows make room. Returns each
    row's output (T, x_dim), in order."""
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
