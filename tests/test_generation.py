"""Generation rows in a live batch: a row's result depends only on the row, never on when it joined or who ran
beside it. Tolerance: 1e-4 absolute on normalised features (fp32; padding changes only float summation order)."""

import pytest
import torch

from model.config import ModelConfig, preset
from model.defaults import Sampling
from model.errors import ConfigError
from model.generation import LiveBatch, Plan, Row, generate_rows
from model.modeling import SpeechFlowModel
from model.solvers import num_steps

TOL = {"atol": 1e-4, "rtol": 1e-4}


def rows(model: SpeechFlowModel, lengths: list[int], seed: int = 0) -> list[Row]:
    gen = torch.Generator().manual_seed(seed)
    return [Row(torch.randn(n, model.config.network.cond_dim, generator=gen), seed=100 + i)
            for i, n in enumerate(lengths)]


def alone(model: SpeechFlowModel, row: Row, s: Sampling) -> torch.Tensor:
    """What the one-shot sampler makes of the row by itself."""
    out = model.generate(row.cond[None], torch.ones(1, row.frames, dtype=torch.bool), [row.seed], nfe=s.steps,
                         solver=s.solver, guidance=s.guidance, guidance_until=s.guidance_until, sway=s.sway,
                         known=None if row.known is None else row.known[None],
                         known_mask=None if row.known_mask is None else row.known_mask[None],
                         **{k: v[None] for k, v in row.extras.items()})
    return out[0].float()


@pytest.mark.parametrize("s", [Sampling(6, 1.0, "euler"), Sampling(8, 2.0, "midpoint")])
def test_rows_that_join_late_and_neighbours_that_leave_change_nothing(debug_model, s):
    a, b, c = rows(debug_model, [37, 23, 51])
    live = LiveBatch(debug_model, s)
    live.join([a])
    live.step()  # a is one step ahead when b joins
    live.join([b])
    for _ in range(2):
        assert live.step() == []
    live.join([c])  # c joins later still, and is the longest: the batch widens
    finished: list[Row] = []
    while len(live):
        finished += live.step()
    assert finished[0] is a  # a left first, while b and c went on without it
    assert {id(r) for r in finished} == {id(a), id(b), id(c)}
    assert all(r.step == num_steps(s.solver, s.steps) for r in finished)
    for row in (a, b, c):
        torch.testing.assert_close(row.output, alone(debug_model, row, s), **TOL)
    assert not torch.allclose(a.output[:23], b.output)  # different seeds and conditions: different outputs


def test_a_row_that_leaves_early_does_not_disturb_the_others(debug_model):
    s = Sampling(6, 2.0, "heun")
    a, b = rows(debug_model, [30, 44], seed=1)
    live = LiveBatch(debug_model, s)
    live.join([a, b])
    live.step()
    live.leave([b])  # cancelled mid-way
    while len(live):
        live.step()
    assert b.output is None and a.output is not None
    torch.testing.assert_close(a.output, alone(debug_model, a, s), **TOL)


def test_known_frames_and_phones_ride_with_their_row():
    model = SpeechFlowModel(ModelConfig(task="tts", network=preset("debug", n_phones=12))).eval()
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.1)
    gen = torch.Generator().manual_seed(3)
    tts_rows = []
    for i, (t, t_p) in enumerate([(40, 15), (28, 10)]):
        known = torch.randn(t, 80, generator=gen)
        cond = known * (torch.arange(t) < t_p)[:, None]
        tts_rows.append(Row(cond, 7 + i, known=cond, known_mask=torch.arange(t) < t_p,
                            extras={"phones": torch.randint(1, 12, (t,), generator=gen)}))
    s = Sampling(4, 2.0, "midpoint")
    outs = generate_rows(model, s, tts_rows, budget=60)  # 2 x 40 > 60: the second row runs after the first
    for row, out in zip(tts_rows, outs, strict=True):
        torch.testing.assert_close(out, alone(model, row, s), **TOL)
        torch.testing.assert_close(out[: int(row.known_mask.sum())], row.known[: int(row.known_mask.sum())])


def test_offline_rows_under_a_small_budget_equal_one_big_batch(debug_model):
    s = Sampling(4, 1.0, "midpoint")
    many = rows(debug_model, [12, 30, 18, 25, 9], seed=2)
    small = generate_rows(debug_model, s, many, budget=40)  # a few rows at a time, joining as others leave
    wide = generate_rows(debug_model, s, rows(debug_model, [12, 30, 18, 25, 9], seed=2), budget=10_000)
    for x, y in zip(small, wide, strict=True):
        torch.testing.assert_close(x, y, **TOL)


@pytest.mark.parametrize("attention", ["rows", "mask"])
@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_rows_with_their_own_steps_grid_and_guidance_share_one_live_batch(debug_model, attention, solver):
    """One live batch of one solver: rows of different NFE, sway, guidance and guidance_until, joining at different
    times, each advance on their own grid, are guided on their own terms, leave after their own steps, and equal
    their offline result alone, whichever way the padded batch attends."""
    debug_model.net.padded_attention = attention
    settings = [Sampling(4, 1.0, solver), Sampling(8, 2.0, solver, sway=-1.0),
                Sampling(6, 3.0, solver, guidance_until=0.5), Sampling(2, 2.0, solver, sway=-0.5),
                Sampling(10, 1.5, solver, sway=0.5, guidance_until=0.3)]
    mixed = rows(debug_model, [37, 23, 51, 30, 12], seed=4)
    for row, s in zip(mixed, settings, strict=True):
        row.sampling = s
    live = LiveBatch(debug_model, solver)  # a solver name: every row brings its own settings
    left_after: dict[int, int] = {}
    for step in range(100):
        live.join({0: mixed[:2], 1: mixed[2:4], 2: mixed[4:]}.get(step, []))
        left_after |= {id(row): row.step for row in live.step()}
        if not len(live):
            break
    for row, s in zip(mixed, settings, strict=True):
        assert left_after[id(row)] == num_steps(solver, s.steps)
        torch.testing.assert_close(row.output, alone(debug_model, row, s), **TOL)


def test_a_live_batch_takes_rows_of_its_own_solver_only(debug_model):
    default = Sampling(4, 2.0, "euler")
    own, other, bare = rows(debug_model, [10, 12, 14])
    own.sampling, other.sampling = Sampling(6, 1.0, "euler", sway=-1.0), Sampling(4, 2.0, "midpoint")
    live = LiveBatch(debug_model, default)
    with pytest.raises(ValueError, match="midpoint"):
        live.join([own, other])
    assert len(live) == 0  # nothing joined: the rows are checked before any joins
    live.join([own, bare])  # bare takes the batch's default
    assert (live.steps_of(own), live.steps_of(bare)) == (6, 4)
    with pytest.raises(ValueError, match="no default"):
        LiveBatch(debug_model, "euler").join([rows(debug_model, [10])[0]])
    with pytest.raises(ConfigError, match="unknown solver"):
        LiveBatch(debug_model, "dopri5")


def test_a_plan_gives_its_sampling_to_rows_without_their_own(debug_model):
    s, mine = Sampling(4, 2.0, "euler"), Sampling(8, 1.0, "euler")
    a, b = rows(debug_model, [10, 12])
    b.sampling = mine
    Plan("enhance", s, [a, b], assemble=lambda pieces: pieces)
    assert a.sampling is s and b.sampling is mine
