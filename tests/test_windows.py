import itertools

import pytest
import torch

from model.windows import match_order, plan_windows, stitch


@pytest.mark.parametrize("n", [1, 50, 600, 601, 1234, 5000])
def test_windows_cover_everything_with_overlap(n):
    spans = plan_windows(n, window=600, overlap=100)
    covered = torch.zeros(n, dtype=torch.bool)
    for s, e in spans:
        assert 0 <= s < e <= n and e - s <= 600
        covered[s:e] = True
    assert covered.all() and spans[-1][1] == n
    for (_, e0), (s1, _) in itertools.pairwise(spans):
        assert e0 - s1 >= 100


def test_stitch_reproduces_a_signal_cut_into_windows():
    x = torch.randn(1234, 4)
    spans = plan_windows(1234, 300, 50)
    torch.testing.assert_close(stitch([x[s:e] for s, e in spans], spans, 1234), x)


def test_stitch_keeps_speaker_order_across_windows():
    a, b = torch.randn(1000, 3), torch.randn(1000, 3) + 5
    truth = torch.cat([a, b], dim=-1)
    spans = plan_windows(1000, 300, 60)
    windows = [truth[s:e] if k % 2 == 0 else torch.cat([b[s:e], a[s:e]], dim=-1) for k, (s, e) in enumerate(spans)]
    torch.testing.assert_close(stitch(windows, spans, 1000, n_streams=2), truth)
    assert torch.equal(match_order(truth[:10], truth[:30], 2), truth[:30])


def test_bad_window_settings():
    with pytest.raises(ValueError):
        plan_windows(100, window=100, overlap=50)
