"""Devices and compute dtypes: clear errors for what is not there, bf16 networks over a float32 ODE state, the
cached ALiBi bias, and the sway time grid."""

import os
from pathlib import Path

import pytest
import torch

from model.defaults import Sampling
from model.devices import resolve_device, resolve_dtype
from model.errors import ConfigError
from model.generation import LiveBatch, Row
from model.solvers import network_passes, step_times
from speechflow.cli import main


def test_a_missing_device_is_a_clear_error_not_a_traceback(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device path cannot be shown here")
    with pytest.raises(ConfigError, match=r"no usable CUDA device.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert main(["enhance", "in.wav", str(tmp_path / "out.wav"), "--device", "cuda:1"]) == 2
    assert "no usable CUDA device" in capsys.readouterr().err


def test_dtypes_resolve_for_the_device():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) in (torch.bfloat16, torch.float32)
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        resolve_dtype("int8", cpu)


def test_a_bf16_network_keeps_the_ode_state_in_float32_and_stays_close_to_fp32(debug_model):
    torch.manual_seed(3)
    cond = torch.randn(2, 40, 80)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 31:] = False
    full = debug_model.generate(cond, mask, seeds=[1, 2], nfe=8, guidance=2.0)
    debug_model.to(dtype=torch.bfloat16)
    half = debug_model.generate(cond, mask, seeds=[1, 2], nfe=8, guidance=2.0)
    assert half.dtype == torch.float32
    error = (half - full).norm() / full.norm()
    assert 0 < error < 0.05, error  # bf16 changes the numbers (so it ran in bf16) but not the sample

    batch = LiveBatch(debug_model, Sampling(steps=4, guidance=2.0))
    batch.join([Row(cond[0], seed=1)])
    batch.step()
    assert batch._x is not None and batch._x.dtype == torch.float32


def test_the_alibi_bias_is_built_once_and_shared_by_every_row(debug_model):
    net = debug_model.net
    full = torch.ones(3, 25, dtype=torch.bool)
    bias = net.attention_bias(full, torch.bfloat16, lengths=[25, 25, 25])
    assert bias.alibi.shape == (1, net.cfg.heads, 26, 26) and bias.alibi.dtype == torch.bfloat16
    assert bias.lengths is None and bias.padded is None  # no row is padded: the shared bias is all there is
    assert net.attention_bias(full, torch.bfloat16).alibi.data_ptr() == bias.alibi.data_ptr()  # cached, no copy
    # the time token (position 0) sees and is seen by every frame; between frames -slope * distance
    alibi = bias.alibi[0]
    assert torch.all(alibi[:, 0, :] == 0) and torch.all(alibi[:, :, 0] == 0)
    assert torch.equal(alibi[:, 1, 4], -net.slopes.to(torch.bfloat16) * 3)
    padded = full.clone()
    padded[1, 20:] = False
    by_row = net.attention_bias(padded, lengths=[25, 20, 25])  # on a CPU: row by row, from the host's lengths
    assert by_row.lengths == (26, 21, 26) and by_row.padded is None  # + the time token
    net.padded_attention = "mask"
    masked = net.attention_bias(padded, lengths=[25, 20, 25])
    assert masked.lengths is None and masked.padded.shape == (3, net.cfg.heads, 26, 26)
    assert torch.equal(masked.padded[1, :, :, :21], masked.alibi[0, :, :, :21])  # ALiBi to the row's own keys ...
    assert torch.all(masked.padded[1, :, :, 21:] == float("-inf"))  # ... -inf to its padding, from every query
    assert torch.isfinite(masked.padded[[0, 2]]).all()
    # with no lengths the padding comes from the mask on its device, never from reading it back
    assert net.attention_bias(padded).padded is not None


def test_sway_bends_the_time_grid_towards_small_early_steps():
    uniform, swayed = step_times(8), step_times(8, sway=-1.0)
    assert torch.equal(uniform, torch.linspace(0, 1, 9))
    assert swayed[0] == 0 and swayed[-1] == 1 and torch.all(swayed.diff() > 0)
    assert swayed[1] < uniform[1] / 4  # the first step is much smaller ...
    assert swayed.diff()[-1] > uniform.diff()[-1]  # ... and the last larger
    with pytest.raises(ConfigError, match="sway"):
        step_times(8, sway=-1.5)


def test_sway_changes_the_sample_and_travels_in_the_sampling_key(debug_model):
    cond, mask = torch.randn(1, 30, 80), torch.ones(1, 30, dtype=torch.bool)
    plain = debug_model.generate(cond, mask, seeds=[0], nfe=6, solver="euler")
    swayed = debug_model.generate(cond, mask, seeds=[0], nfe=6, solver="euler", sway=-1.0)
    assert not torch.allclose(plain, swayed, atol=1e-3)
    batch = LiveBatch(debug_model, Sampling(steps=6, guidance=1.0, solver="euler", sway=-1.0))
    row = Row(cond[0], seed=0)
    batch.join([row])
    while not batch.step():
        pass
    torch.testing.assert_close(row.output, swayed[0], atol=1e-5, rtol=0)


def test_guidance_until_guides_only_the_early_part_of_the_path(debug_model):
    torch.manual_seed(5)
    cond, mask = torch.randn(1, 24, 80), torch.ones(1, 24, dtype=torch.bool)
    full = debug_model.generate(cond, mask, seeds=[3], nfe=8, guidance=2.0)
    torch.testing.assert_close(debug_model.generate(cond, mask, seeds=[3], nfe=8, guidance=2.0, guidance_until=1.0),
                               full, atol=0, rtol=0)
    never = debug_model.generate(cond, mask, seeds=[3], nfe=8, guidance=2.0, guidance_until=0.0)
    torch.testing.assert_close(never, debug_model.generate(cond, mask, seeds=[3], nfe=8), atol=1e-6, rtol=0)
    half = debug_model.generate(cond, mask, seeds=[3], nfe=8, guidance=2.0, guidance_until=0.5)
    assert not torch.allclose(half, full, atol=1e-4) and not torch.allclose(half, never, atol=1e-4)


def test_a_live_batch_mixing_guided_and_unguided_rows_gives_each_row_its_own_result(debug_model):
    """A row that joins late is still guided while its neighbour, further along, is past guidance_until."""
    s = Sampling(steps=8, guidance=2.0, guidance_until=0.5)
    torch.manual_seed(6)
    first, late = Row(torch.randn(30, 80), seed=1), Row(torch.randn(22, 80), seed=2)
    batch = LiveBatch(debug_model, s)
    batch.join([first])
    for _ in range(2):
        batch.step()  # first is at t = 0.5 now: unguided from here on; late joins at t = 0, guided
    batch.join([late])
    while len(batch):
        batch.step()
    for row in (first, late):
        alone = debug_model.generate(row.cond[None], torch.ones(1, row.frames, dtype=torch.bool), seeds=[row.seed],
                                     nfe=8, guidance=2.0, guidance_until=0.5)
        torch.testing.assert_close(row.output, alone[0], atol=1e-4, rtol=0)


def test_network_passes_count_guided_evaluations_twice():
    assert network_passes(Sampling(steps=16, guidance=1.0)) == 16
    assert network_passes(Sampling(steps=16, guidance=2.0)) == 32
    # midpoint, 8 steps of 1/8: evaluations at 0, 1/16, 2/16, ... 15/16; the 8 below 0.5 are guided
    assert network_passes(Sampling(steps=16, guidance=2.0, guidance_until=0.5)) == 24


KERNEL_CACHE_PROBE = """
import random, sys
from pathlib import Path
import torch
import model  # noqa: F401  (bounds oneDNN's kernel caches)

def rss_mb():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith("VmRSS:")) / 1024

torch.set_num_threads(1)
layer = torch.nn.Linear(256, 1024)
lengths = list(range(100, 500))
random.Random(0).shuffle(lengths)
with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
    for t in lengths[:150]:  # fill the caches (a cache of 128 is full after this)
        layer(torch.randn(1, t, 256))
    start = rss_mb()
    for t in lengths[150:]:  # 250 more shapes never seen
        layer(torch.randn(1, t, 256))
print(rss_mb() - start)
"""


def test_bf16_kernel_caches_are_bounded_so_new_shapes_do_not_grow_memory():
    # a server meets a new shape with every live batch length; oneDNN keeps a compiled kernel per shape (~0.5 MB),
    # 1,024 of them per cache by default: 250 new shapes grew RSS by ~140 MB before the bound, ~0 after it; on an
    # AMX CPU 170 MB before and 33-40 MB after (the allocator's own growth), so the line sits between the two
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    grown = float(subprocess.run([sys.executable, "-c", KERNEL_CACHE_PROBE], capture_output=True, text=True,
                                 check=True, env=env, cwd=Path(__file__).resolve().parents[1]).stdout)
    assert grown < 80, f"RSS grew {grown:.0f} MB over 250 new matmul shapes"
