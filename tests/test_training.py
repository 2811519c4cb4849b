import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel
from training.data import CropDataset, FrameBudgetBatches, collate_waveforms
from training.manifest import ManifestError, read_manifest
from training.pretrain import PretrainObjective, pretrain
from training.trainer import STATE_FILE, TrainConfig

FAST = dict(lr=3e-3, warmup=5, batch_seconds=4.0, max_seconds=1.0, log_every=5, precision="fp32", num_workers=0,
            device="cpu")


def _fixed_loss(model: SpeechFlowModel, manifest: Path) -> float:
    """The pre-training loss on a fixed batch with fixed masks, noise and times (a held-still yardstick)."""
    utts = read_manifest(manifest)
    data = CropDataset(utts, max_seconds=1.0)
    batch = collate_waveforms([data[(i, 0)] for i in range(len(utts))])
    objective = PretrainObjective(model.config)
    losses = []
    with torch.no_grad():
        for k in range(4):
            gen = torch.Generator().manual_seed(k)
            losses.append(float(objective(model.net, batch, np.random.default_rng(k), gen)))
    return float(np.mean(losses))


def test_pretraining_lowers_the_loss_writes_a_model_and_resumes(tiny_corpus, tmp_path):
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


def test_killed_run_resumes_to_the_same_weights(tiny_corpus, tmp_path, monkeypatch):
    """A run killed after its step-10 save and resumed ends with the same weights as an uninterrupted run:
    optimizer moments, EMA, learning-rate schedule, data order and per-step randomness all survive."""
    cfg = TrainConfig(steps=20, save_every=10, **FAST)
    pretrain(tiny_corpus, tmp_path / "a", "debug", cfg)

    import training.data as data_module

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


def test_existing_run_is_not_overwritten_without_resume(tiny_corpus, tmp_path):
    from model.errors import CheckpointError

    pretrain(tiny_corpus, tmp_path, "debug", TrainConfig(steps=2, **FAST))
    with pytest.raises(CheckpointError, match="--resume"):
        pretrain(tiny_corpus, tmp_path, "debug", TrainConfig(steps=4, **FAST))


def test_frame_budget_batches():
    durations = list(np.random.default_rng(0).uniform(0.5, 6.0, size=200))
    batches = FrameBudgetBatches(durations, batch_seconds=12.0, max_seconds=3.0, seed=1)
    epoch = batches.epoch(0)
    assert sorted(i for b in epoch for i in b) == list(range(200))  # every utterance once per epoch
    for b in epoch:
        assert len(b) * max(min(durations[i], 3.0) for i in b) <= 12.0 + 1e-9
    # resuming at step k yields exactly what the stream yields after k batches (across epoch boundaries)
    stream = batches.iterate(0)
    head = [next(stream) for _ in range(len(epoch) + 7)]
    assert list(next(batches.iterate(len(epoch) + 3)) for _ in range(1)) == [head[len(epoch) + 3]]
    # two ranks split the global stream without overlap
    r0 = FrameBudgetBatches(durations, 12.0, 3.0, seed=1, rank=0, world_size=2).iterate(0)
    r1 = FrameBudgetBatches(durations, 12.0, 3.0, seed=1, rank=1, world_size=2).iterate(0)
    assert [next(r0), next(r1)] == head[:2]


def test_crops_are_bounded_and_seeded(tiny_corpus):
    data = CropDataset(read_manifest(tiny_corpus), max_seconds=0.5)
    a, b = data[(7, 1)], data[(7, 2)]
    assert len(a) == len(b) == 8000
    assert not np.allclose(a, b)
    assert np.array_equal(a, data[(7, 1)])


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "a.wav", "duration": 1.0}\n{"audio": "b.wav"}\n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2"):
        read_manifest(bad)
    bad.write_text("")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(bad)


def test_distributed_pretraining_with_two_processes(tiny_corpus, tmp_path):
    """torchrun, two CPU processes, gloo: both ranks train, rank 0 writes one checkpoint."""
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


def test_warm_start_from_a_model_directory(debug_model, tiny_corpus, tmp_path):
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
    from training.trainer import Trainer

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


def test_sigterm_to_the_whole_process_group_saves_and_exits_cleanly(tiny_corpus, tmp_path):
    """`kill -TERM -<pgid>` (docker stop, a scheduler, Ctrl-C) also reaches the data workers: the run must still
    finish its step, save, and exit 0, and --resume must continue from that step."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "speechflow.cli", "pretrain", "--data", str(tiny_corpus), "--preset", "debug",
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

    from training.trainer import Trainer

    def objective(net, batch, rng, gen):
        x = batch["x"]
        t = torch.rand(2, generator=gen)
        loss = (net(x + 0.1 * torch.randn(x.shape, generator=gen), t, x, torch.ones(2, 5, dtype=torch.bool)) - x)
        return loss.pow(2).mean() * (float("nan") if batch["bad"] else 1.0)

    def loaders(start, rank, world, kill_at=None):
        for i in itertools.count(start):
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
