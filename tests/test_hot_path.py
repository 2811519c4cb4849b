"""A live batch's step reads nothing back from the device: no `.item()`, `bool(tensor)`, `.tolist()`, `nonzero` or
other data-dependent shape anywhere in it (packing, the solver, guidance, the network), on either attention path.
On a GPU each of those would stall the host until the device caught up, once per layer or evaluation.

The CPU stands in for the device: every tensor the step touches counts as device data. Two checks: whole live
batch steps (packing included) under a dispatch mode that fails on the ops that copy a tensor's values to the host
or size an output by them, and one solver step over packed rows traced by TorchDynamo with fullgraph=True, which
fails on any graph break (each of those reads is one)."""

from __future__ import annotations

import pytest
import torch

from model.defaults import Sampling
from model.flow import PackedRows
from model.generation import LiveBatch, Row
from model.profiling import no_host_sync


def test_the_guard_catches_what_it_must():
    x = torch.ones(3)
    for read in (lambda: bool(x.all()), lambda: x.sum().item(), lambda: x.nonzero(), lambda: x.tolist(),
                 lambda: x[x > 0], lambda: int(x[0]), lambda: x.numpy()):
        with pytest.raises(AssertionError, match=r"reads a tensor back|boolean mask"), no_host_sync():
            read()
    with no_host_sync():  # what a step does do: shapes from the host, gathers and copies on the device
        mask = torch.arange(2)[None] < torch.tensor([2, 1])[:, None]  # (2, 2)
        picked = x.index_select(0, torch.tensor([0, 2])).index_copy(0, torch.tensor([1]), x[:1])  # (2,)
        assert (picked * mask).shape == (2, 2)
    assert x.tolist() == [1.0, 1.0, 1.0]  # and gone after


@pytest.mark.parametrize("attention", ["rows", "mask"])
def test_live_batch_steps_read_nothing_back(debug_model, attention):
    """Padded rows joining at different times, guided and unguided rows in one evaluation (guidance stops at
    t = 0.5, so the early rows drop out of the unconditional pass while the late ones stay in it), rows finishing
    and leaving: every step, including the ones that repack the batch, runs under the guard."""
    debug_model.net.padded_attention = attention
    gen = torch.Generator().manual_seed(0)
    rows = [Row(torch.randn(n, 80, generator=gen), seed=i) for i, n in enumerate([30, 17, 24, 9])]
    live = LiveBatch(debug_model, Sampling(steps=8, guidance=2.0, solver="midpoint", guidance_until=0.5))
    joins = {0: rows[:2], 2: rows[2:3], 3: rows[3:]}
    finished = []
    for step in range(20):
        live.join(joins.get(step, []))
        with no_host_sync():
            finished += live.step()
        if not len(live):
            break
    assert {id(r) for r in finished} == {id(r) for r in rows}
    assert all(torch.isfinite(r.output).all() for r in rows)


@pytest.mark.parametrize("attention", ["rows", "mask"])
def test_a_solver_step_on_packed_rows_compiles_as_one_graph(debug_model, attention):
    """TorchDynamo with fullgraph=True refuses a graph break, and every host read (`bool(tensor)`, `.item()`,
    `.tolist()`, a data-dependent shape) is one; backend="eager" traces without generating code, so it is quick.
    One step of a padded batch where one evaluation guides some rows, another all, another none."""
    debug_model.net.padded_attention = attention
    gen = torch.Generator().manual_seed(1)
    lengths = [21, 9, 14]
    cond = torch.randn(3, 21, 80, generator=gen)
    mask = torch.arange(21)[None] < torch.tensor(lengths)[:, None]
    batch = PackedRows(debug_model.net, cond, mask, lengths, [2.0, 1.0, 3.0], {})
    x = torch.randn(3, 21, 80, generator=gen) * mask[..., None]
    t, dt = torch.tensor([0.0, 0.5, 0.25]), torch.tensor([0.25, 0.125, 0.25])
    torch._dynamo.reset()
    step = torch.compile(debug_model.flow.step, backend="eager", fullgraph=True)
    guided = [(0, 2), (0, 1, 2), (), (2,)]
    compiled = step(debug_model.net, x, t, dt, batch, solver="rk4", guided=guided)
    torch.testing.assert_close(compiled, debug_model.flow.step(debug_model.net, x, t, dt, batch, solver="rk4",
                                                               guided=guided), atol=0, rtol=0)
