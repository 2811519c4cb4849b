"""Generation rows in a live batch: a row's result depends only on the row, never on when it joined or who ran
beside it. Tolerance: 1e-4 absolute on normalised features (fp32; padding changes only float summation order)."""

import pytest
import torch

from model.config import ModelConfig, preset
from model.defaults import Sampling
from model.generation import LiveBatch, Row, generate_rows
from model.modeling import SpeechFlowModel

TOL = {"atol": 1e-4, "rtol": 1e-4}


def rows(model: SpeechFlowModel, lengths: list[int], seed: int = 0) -> list[Row]:
    gen = torch.Generator().manual_seed(seed)
    return [Row(torch.randn(n, model.config.network.cond_dim, generator=gen), seed=100 + i)
            for i, n in enumerate(lengths)]


def alone(model: SpeechFlowModel, row: Row, s: Sampling) -> torch.Tensor:
    """What the one-shot sampler makes of the row by itself."""
    out = model.generate(row.cond[None], torch.ones(1, row.frames, dtype=torch.bool), [row.seed], nfe=s.steps,
                         solver=s.solver, guidance=s.guidance,
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
    assert {id(r) for r in finished} == {id(a), id(b), id(c)} and all(r.step == live.steps for r in finished)
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
