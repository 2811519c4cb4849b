import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut
from safetensors import safe_open

from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel
from training.data.convert import convert_manifest
from training.data.cuts import ManifestError
from training.data.loading import (
    BatchKey,
    CropBudget,
    CutBatchDataset,
    CutStream,
    DataPosition,
    SamplerConfig,
    crop_cut,
)
from training.data.manifest import open_cuts
from training.tasks.pretraining import PretrainObjective
from training.trainers.pretrain import pretrain
from training.trainers.trainer import STATE_FILE, TrainConfig

FAST = dict(lr=3e-3, warmup=5, batch_seconds=4.0, max_seconds=1.0, log_every=5, precision="fp32", num_workers=0,
            device="cpu")


def to_cuts(manifest: Path) -> Path:
    """The CutSet of a fixture's JSONL manifest, beside it."""
    out = manifest.parent / "train_cuts.jsonl.gz"
    convert_manifest(manifest, out)
    return out


@pytest.fixture
def tiny_cuts(tiny_corpus: Path) -> Path:
    return to_cuts(tiny_corpus)


def _fixed_loss(model: SpeechFlowModel, manifest: Path) -> float:
    """The pre-training loss on a fixed batch with fixed masks, noise and times (a held-still yardstick)."""
    cuts = CutSet(list(open_cuts(manifest)))
    batch = CutBatchDataset(max_seconds=1.0)[BatchKey(0, 0, cuts)]["tensors"]
    objective = PretrainObjective(model.config)
    losses = []
    with torch.no_grad():
        for k in range(4):
            gen = torch.Generator().manual_seed(k)
            losses.append(float(objective(model.net, batch, np.random.default_rng(k), gen)))
    return float(np.mean(losses))


def test_pretraining_lowers_the_loss_writes_a_model_and_resumes(tiny_cuts, tmp_path):
    tiny_corpus = tiny_cuts
    torch.manual_seed(0)
    untrained = SpeechFlowModel(ModelConfig(network=preset("debug")))
    before = _fixed_loss(untrained, tiny_corpus)

    out = tmp_path / "run"
    pretrain(tiny_corpus, out, "debug", TrainConfig(steps=60, save_every=30, **FAST))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(5, 61, 5))
    assert all(np.isfinite(r["loss"]) for r in log)

    trained = SpeechFlowModel.from_pretrained(out)  # EMA weights, loadable as a model directory
    assert trained.config.extra["training"]["step"] == 60
    after = _fixed_loss(trained, tiny_corpus)
    assert after < 0.8 * before, (before, after)

    # resume: the step count continues and the log goes on from 60
    pretrain(tiny_corpus, out, "debug", TrainConfig(steps=70, save_every=30, **FAST), resume=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 70 and log[-2]["step"] == 65
    assert SpeechFlowModel.from_pretrained(out).config.extra["training"]["step"] == 70


@pytest.mark.parametrize("workers", [0, 1])
def test_killed_run_resumes_to_the_same_weights(tiny_cuts, tmp_path, monkeypatch, workers):
    """A run killed after its step-10 save and resumed ends with the same weights as an uninterrupted run:
    optimizer moments, EMA, learning-rate schedule, data order (the sampler's position in train_state, right even
    when a worker has prefetched past it) and per-step randomness all survive. 20 steps of 2 batches an epoch:
    the run crosses epochs, and is killed mid-epoch."""
    tiny_corpus = tiny_cuts
    cfg = TrainConfig(steps=20, save_every=10, **{**FAST, "num_workers": workers})
    pretrain(tiny_corpus, tmp_path / "a", "debug", cfg)

    import training.data.loading as data_module

    real_make_loader = data_module.make_loader

    def dying_loader(*args, **kwargs):
        def batches():
            for i, batch in enumerate(real_make_loader(*args, **kwargs)):
                if i == 12:
                    raise KeyboardInterrupt  # killed at step 12, two steps after the last save
                yield batch
        return batches()

    monkeypatch.setattr(data_module, "make_loader", dying_loader)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_corpus, tmp_path / "b", "debug", cfg)
    monkeypatch.setattr(data_module, "make_loader", real_make_loader)
    pretrain(tiny_corpus, tmp_path / "b", "debug", cfg, resume=True)

    a = SpeechFlowModel.from_pretrained(tmp_path / "a").net.state_dict()
    b = SpeechFlowModel.from_pretrained(tmp_path / "b").net.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]  # the log is cut back to the resumed step: no duplicate rows
    with safe_open(str(tmp_path / "b" / STATE_FILE), framework="pt") as f:
        assert json.loads(f.metadata()["data_position"]) == {"world_size": 1, "ranks": [{"epoch": 9, "batch": 2}]}


def test_a_state_from_before_cutsets_resumes_with_fresh_data_order(tiny_cuts, tmp_path, caplog):
    """A run saved by the old data path (no data position in its state) resumes its weights and schedule; its data
    start again at epoch 0, with a warning."""
    import logging

    from safetensors.torch import load_file, save_file

    pretrain(tiny_cuts, tmp_path, "debug", TrainConfig(steps=2, **FAST))
    state = tmp_path / STATE_FILE
    with safe_open(str(state), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "data_position"}
    save_file(load_file(state), state, metadata=meta)
    with caplog.at_level(logging.WARNING):
        pretrain(tiny_cuts, tmp_path, "debug", TrainConfig(steps=4, **FAST), resume=True)
    assert "data order starts afresh" in caplog.text
    assert SpeechFlowModel.from_pretrained(tmp_path).config.extra["training"]["step"] == 4


def test_an_old_jsonl_manifest_trains_as_its_cutset(tiny_corpus, tiny_cuts, tmp_path):
    """A JSONL manifest of the old format is converted on read: the same run as on its converted CutSet."""
    pretrain(tiny_corpus, tmp_path / "old", "debug", TrainConfig(steps=3, **FAST))
    pretrain(tiny_cuts, tmp_path / "new", "debug", TrainConfig(steps=3, **FAST))
    a = SpeechFlowModel.from_pretrained(tmp_path / "old").net.state_dict()
    b = SpeechFlowModel.from_pretrained(tmp_path / "new").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten_without_resume(tiny_corpus, tmp_path):
    from model.errors import CheckpointError

    pretrain(tiny_corpus, tmp_path, "debug", TrainConfig(steps=2, **FAST))
    with pytest.raises(CheckpointError, match="--resume"):
        pretrain(tiny_corpus, tmp_path, "debug", TrainConfig(steps=4, **FAST))


def _cuts(durations) -> CutSet:
    """Metadata-only cuts (no audio): what the sampler sees."""
    return CutSet([MonoCut(f"c{i:03d}", 0.0, float(d), 0) for i, d in enumerate(durations)])


def test_frame_budget_batches_from_lhotse_sampler(tmp_path):
    durations = list(np.random.default_rng(0).uniform(0.5, 6.0, size=200))
    path = tmp_path / "cuts.jsonl.gz"
    _cuts(durations).to_file(path)
    length = {f"c{i:03d}": min(d, 3.0) for i, d in enumerate(durations)}
    cfg = SamplerConfig(budget=12.0, max_seconds=3.0, seed=1)
    stream = CutStream(path, cfg)
    keys = stream.keys()
    head = [next(keys) for _ in range(60)]
    first = [[c.id for c in b.cuts] for b in head if b.epoch == 0]
    assert sorted(i for b in first for i in b) == sorted(length)  # every cut once per epoch
    for b in head:  # the padded budget, rows x longest crop, closed as Lhotse does: one row less always fits
        assert (len(b.cuts) - 1) * max(length[c.id] for c in b.cuts) <= 12.0 + 1e-9
    padded = [len(b.cuts) * max(length[c.id] for c in b.cuts) for b in head]
    assert np.median(padded) > 0.75 * 12.0 and np.median(padded) < 1.1 * 12.0  # buckets: batches near the budget
    assert [b.index for b in head if b.epoch == 0] == list(range(len(first)))
    assert {b.epoch for b in head} >= {0, 1}  # the stream crosses epochs
    assert [c.id for c in head[len(first)].cuts] != first[0]  # a new order each epoch
    # resuming at a position yields exactly what the stream yields from there (across the epoch boundary)
    k = len(first) + 3
    resumed = CutStream(path, cfg).keys(DataPosition(head[k].epoch, head[k].index))
    assert [[c.id for c in next(resumed).cuts] for _ in range(3)] == [[c.id for c in b.cuts] for b in head[k:k + 3]]
    # two ranks split each epoch without overlap
    ranks = [CutStream(path, cfg, rank=r, world_size=2).keys() for r in range(2)]
    drawn = [{c.id for _ in range(8) for c in next(it).cuts} for it in ranks]
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1]


def test_crop_budget_counts_the_crop():
    budget = CropBudget(max_duration=4.0, max_seconds=1.0)
    for d in (5.0, 0.5, 9.0, 1.0):
        budget.add(MonoCut("x", 0.0, d, 0))
    assert budget.longest_seen == 1.0 and not budget.exceeded() and budget.close_to_exceeding()
    budget.add(MonoCut("y", 0.0, 0.2, 0))
    assert budget.exceeded()


def test_crops_are_bounded_and_seeded(tiny_cuts):
    cut = next(c for c in open_cuts(tiny_cuts) if c.duration > 2.5)
    data = CutBatchDataset(max_seconds=0.5)
    a, b = data.item(cut, 1)["wav"], data.item(cut, 2)["wav"]
    assert len(a) == len(b) == 8000
    assert not np.allclose(a, b)
    assert np.array_equal(a, data.item(cut, 1)["wav"])
    crop, start = crop_cut(cut, 0.5, 1)
    assert crop.duration == pytest.approx(0.5) and 0 <= start <= cut.duration - 0.5


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        open_cuts(tmp_path / "missing.jsonl.gz")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "a.wav", "duration": 1.0}\n{"audio": "b.wav"}\n')
    with pytest.raises(ManifestError, match=r"cannot read audio .*a\.wav"):
        open_cuts(bad)
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2"):
        open_cuts(bad)
    bad.write_text("")
    with pytest.raises(ManifestError, match="no cuts"):
        open_cuts(bad)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ManifestError, match="not Lhotse Shar"):
        open_cuts(tmp_path / "dir")


def test_distributed_pretraining_with_two_processes(tiny_cuts, tmp_path):
    """torchrun, two CPU processes, gloo: both ranks train, rank 0 writes one checkpoint."""
    tiny_corpus = tiny_cuts
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "speechflow.cli", "pretrain", "--data", str(tiny_corpus), "--preset",
           "debug", "--out",
           str(tmp_path / "ddp"), "--steps", "6", "--log-every", "3", "--precision", "fp32", "--num-workers", "0",
           "--device", "cpu", "--batch-seconds", "2", "--max-seconds", "1", "--lr", "3e-3", "--warmup", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6] and log[0]["world_size"] == 2
    with safe_open(str(tmp_path / "ddp" / STATE_FILE), framework="pt") as f:  # one batch per step and rank
        assert {k: f.metadata()[k] for k in ("step", "batches", "skipped")} == {"step": "6", "batches": "6",
                                                                               "skipped": "0"}
        raw = {k[4:]: f.get_tensor(k) for k in f.keys() if k.startswith("net.")}  # noqa: SIM118
    trained = SpeechFlowModel.from_pretrained(tmp_path / "ddp")
    assert trained.config.extra["training"]["step"] == 6
    torch.manual_seed(0)  # the run's initial weights (seed 0)
    untrained = SpeechFlowModel(ModelConfig(network=preset("debug")))
    before = _fixed_loss(untrained, tiny_corpus)
    trained.net.load_state_dict(raw)  # the raw weights: 6 EMA steps barely move from the start
    assert _fixed_loss(trained, tiny_corpus) < 0.9 * before, before
    # both ranks' replicas equal and the data disjoint: tests/test_distributed.py


def test_warm_start_from_a_model_directory(debug_model, tiny_cuts, tmp_path):
    tiny_corpus = tiny_cuts
    debug_model.save_pretrained(tmp_path / "shipped", dtype=torch.float16)
    out = pretrain(tiny_corpus, tmp_path / "run", "tiny", TrainConfig(steps=1, lr=1e-9, warmup=1,
                                                                    **{k: v for k, v in FAST.items() if k not in
                                                                       ("lr", "warmup")}),
                   init=tmp_path / "shipped")
    model = SpeechFlowModel.from_pretrained(out)
    assert model.config.network == debug_model.config.network  # the architecture of the weights, not "tiny"
    assert model.config.extra["init"]["from"] == str(tmp_path / "shipped")
    torch.testing.assert_close(model.net.in_proj.weight, debug_model.net.in_proj.weight, atol=2e-3, rtol=0)


def test_a_non_finite_step_is_skipped_not_applied(debug_model, tmp_path):
    from training.trainers.trainer import Trainer

    calls = []

    def objective(net, batch, rng, gen):
        calls.append(1)
        loss = net(batch["x"], torch.zeros(2), batch["x"], torch.ones(2, 5, dtype=torch.bool)).pow(2).mean()
        return loss * float("nan") if len(calls) == 2 else loss

    def loaders(start, rank, world):
        while True:
            yield {"x": torch.randn(2, 5, 80)}

    cfg = TrainConfig(steps=3, save_every=100, **FAST)
    Trainer(debug_model, objective, loaders, cfg, tmp_path).fit()
    model = SpeechFlowModel.from_pretrained(tmp_path)
    assert len(calls) == 4 and model.config.extra["training"]["step"] == 3
    assert all(torch.isfinite(p).all() for p in model.net.parameters())


def test_sigterm_to_the_whole_process_group_saves_and_exits_cleanly(tiny_cuts, tmp_path):
    """`kill -TERM -<pgid>` (docker stop, a scheduler, Ctrl-C) also reaches the data workers: the run must still
    finish its step, save, and exit 0, and --resume must continue from that step."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "speechflow.cli", "pretrain", "--data", str(tiny_cuts), "--preset", "debug",
           "--out", str(out), "--steps", "100000", "--log-every", "1", "--save-every", "100000", "--precision",
           "fp32", "--num-workers", "1", "--device", "cpu", "--batch-seconds", "2", "--max-seconds", "1",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    step = SpeechFlowModel.from_pretrained(out).config.extra["training"]["step"]
    assert step >= 3


def test_a_resume_across_a_skipped_step_is_exact(debug_model, tmp_path):
    """Batch 3 is non-finite, so 8 steps draw 9 batches. A run killed after its step-5 save must resume at batch 6
    (its data position), not 5 (its step), to end with the uninterrupted run's weights."""
    import copy
    import itertools

    from safetensors.torch import load_file

    from training.trainers.trainer import Trainer

    def objective(net, batch, rng, gen):
        x = batch["x"]
        t = torch.rand(2, generator=gen)
        loss = (net(x + 0.1 * torch.randn(x.shape, generator=gen), t, x, torch.ones(2, 5, dtype=torch.bool)) - x)
        return loss.pow(2).mean() * (float("nan") if batch["bad"] else 1.0)

    def loaders(start, rank, world, kill_at=None):
        for i in itertools.count(start.batch):  # plain dicts: the trainer counts the position in batches
            if i == kill_at:
                raise KeyboardInterrupt
            yield {"x": torch.randn(2, 5, 80, generator=torch.Generator().manual_seed(i)), "bad": torch.tensor(i == 3)}

    cfg = TrainConfig(steps=8, save_every=5, **FAST)
    Trainer(copy.deepcopy(debug_model), objective, loaders, cfg, tmp_path / "a").fit()
    killed = Trainer(copy.deepcopy(debug_model), objective, lambda *a: loaders(*a, kill_at=7), cfg, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert killed.step == 6 and killed.batches == 7  # one step past the save at 5 (batches 0-5, 3 skipped)
    Trainer(copy.deepcopy(debug_model), objective, loaders, cfg, tmp_path / "b").fit(resume=True)

    for name in ("model.safetensors", STATE_FILE):  # EMA, raw weights and optimizer moments, bit for bit
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    with safe_open(str(tmp_path / "b" / STATE_FILE), framework="pt") as f:
        assert (f.metadata()["step"], f.metadata()["batches"]) == ("8", "9")


def test_data_bench_reports_throughput(tiny_cuts, tmp_path):
    """`speechflow data-bench` on a manifest and on its shards: cuts/s and audio s/s, total and per worker."""
    from training.data.shar_export import export_shar
    from training.trainers.data_bench import run_bench

    export_shar(tiny_cuts, tmp_path / "shards", shard_size=4)
    for data in (tiny_cuts, tmp_path / "shards"):
        report = run_bench(data, batches=3, workers=0, batch_seconds=2.0, max_seconds=1.0)
        assert report["cuts_per_s"] > 0 and report["audio_s_per_s"] > 0
        assert report["format"] == ("shar" if data.is_dir() else "manifest")
        assert report["audio_s_per_s_per_worker"] == report["audio_s_per_s"]  # no workers: the main process is one
