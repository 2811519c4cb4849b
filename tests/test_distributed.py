"""Two gloo ranks (torch.multiprocessing, CPU): a SIGTERM that reaches one rank stops both after the same step, only
rank 0 touches the run directory (the other rank's --out stays empty, so no shared filesystem is assumed), a
resumed run ends with exactly the weights of an uninterrupted one, the replicas stay identical, a non-finite step on
one rank is skipped by both, and the ranks draw disjoint data: from a CutSet manifest (Lhotse's sampler splits the
batches) and from Lhotse Shar shards (each rank reads its own shards)."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tests.conftest import write_tiny_corpus
from tests.test_training import FAST, to_cuts

WORLD = 2
STEPS = 8
PER_EPOCH = 2  # batches per rank and epoch: 8 one-second crops, 2 a batch, 2 ranks
POISON_AT = 2  # rank 1's batch at this data position has a NaN loss: both ranks must skip the step
KILL_AT = 5  # rank 1 receives SIGTERM while drawing this batch: both ranks stop after the step it feeds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _instrument(rank: int, job: dict, drawn: list) -> None:
    """Record this rank's batches by data position; poison and signal at the job's positions."""
    from training.data.loading import CutStream
    from training.tasks.pretraining import PretrainObjective

    poisoned: list[bool] = []
    real_keys, real_call = CutStream.keys, PretrainObjective.__call__

    def keys(self, position=None):
        for key in real_keys(self, position):
            assert key.index < PER_EPOCH
            ordinal = key.epoch * PER_EPOCH + key.index  # the data position as a count of batches
            if rank == 1 and ordinal == job.get("kill_at"):
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: finish the step, then stop
            poisoned.append(rank == 1 and ordinal == POISON_AT)
            drawn.append([ordinal, sorted(c.id for c in key.cuts)])
            yield key

    def call(self, net, batch, rng, gen):
        loss = real_call(self, net, batch, rng, gen)
        return loss * float("nan") if poisoned.pop() else loss

    CutStream.keys = keys
    PretrainObjective.__call__ = call


def _rank_main(rank: int, port: int, job: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from training.trainers.pretrain import pretrain
    from training.trainers.trainer import TrainConfig, Trainer

    drawn: list = []
    _instrument(rank, job, drawn)
    real_fit = Trainer.fit

    def fit(self, resume=False):  # keep what this rank ended with: its weights, step and data
        out = real_fit(self, resume)
        dump = job["dump"] / f"{job['name']}.rank{rank}"
        save_file({k: v.contiguous() for k, v in self.model.net.state_dict().items()}, f"{dump}.safetensors")
        Path(f"{dump}.json").write_text(json.dumps({"step": self.step, "batches": self.batches, "drawn": drawn}))
        return out

    Trainer.fit = fit
    cfg = TrainConfig(steps=STEPS, save_every=1000, **{**FAST, "batch_seconds": 2.0, "log_every": 1})
    pretrain(job["data"], job["outs"][rank], "debug", cfg, resume=job["resume"])


def _launch(name: str, tmp: Path, corpus: Path, out: Path, resume: bool = False, kill_at: int | None = None) -> dict:
    """One two-rank run; rank 1's --out is a directory of its own that must never be written."""
    job = {"name": name, "data": corpus, "outs": [out, tmp / "rank1-out"], "resume": resume, "dump": tmp,
           "kill_at": kill_at}
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(rank, port, job)) for rank in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()  # our own children: a rank left waiting in an all-reduce would otherwise never end
    assert not hung, f"{name}: a rank hung: the ranks fell out of step (stop flag, shared resume state)"
    assert [p.exitcode for p in procs] == [0] * WORLD, name
    assert not (tmp / "rank1-out").exists(), "rank 1 wrote to its --out"
    return {rank: json.loads((tmp / f"{name}.rank{rank}.json").read_text()) for rank in range(WORLD)}


def _weights(tmp: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(tmp / f"{name}.rank{rank}.safetensors")


@pytest.fixture(scope="module", params=["manifest", "shar"])
def runs(request, tmp_path_factory) -> dict:
    """An uninterrupted run, and the same run stopped by a SIGTERM to rank 1 and resumed (three launches), from the
    CutSet manifest or from its Shar shards (4 shards of 2 cuts)."""
    from training.data.shar_export import export_shar

    tmp = tmp_path_factory.mktemp(f"ddp-{request.param}")
    corpus = to_cuts(write_tiny_corpus(tmp))
    if request.param == "shar":
        assert export_shar(corpus, tmp / "shards", shard_size=2) == 4
        corpus = tmp / "shards"
    runs = {"tmp": tmp, "whole": _launch("whole", tmp, corpus, tmp / "whole"),
            "stopped": _launch("stopped", tmp, corpus, tmp / "resumed", kill_at=KILL_AT)}
    runs["saved_step"] = json.loads((tmp / "resumed" / "config.json").read_text())["extra"]["training"]["step"]
    runs["resumed"] = _launch("resumed", tmp, corpus, tmp / "resumed", resume=True)
    return runs


def test_a_sigterm_to_one_rank_stops_both_after_the_same_step_and_rank_0_saves(runs):
    stopped = runs["stopped"]
    # positions 0..KILL_AT drawn, one of them (POISON_AT) skipped: KILL_AT steps trained on both ranks
    assert [stopped[r]["step"] for r in range(WORLD)] == [KILL_AT] * WORLD
    assert [stopped[r]["batches"] for r in range(WORLD)] == [KILL_AT + 1] * WORLD
    assert runs["saved_step"] == KILL_AT  # rank 0 saved when it stopped (save_every is far away)


def test_the_resumed_run_ends_with_exactly_the_uninterrupted_weights(runs):
    tmp = runs["tmp"]
    assert [runs["resumed"][r]["step"] for r in range(WORLD)] == [STEPS] * WORLD
    whole = _weights(tmp, "whole", 0)
    for name, rank in (("resumed", 0), ("resumed", 1), ("whole", 1)):  # resumed and replicas: bit for bit
        other = _weights(tmp, name, rank)
        assert all(torch.equal(whole[k], other[k]) for k in whole), (name, rank)
    ema_whole = load_file(tmp / "whole" / "model.safetensors")
    ema_resumed = load_file(tmp / "resumed" / "model.safetensors")
    assert all(torch.equal(ema_whole[k], ema_resumed[k]) for k in ema_whole)
    assert whole["out_proj.weight"].abs().sum() > 0  # zero-initialised: it trained


def test_a_non_finite_step_on_one_rank_is_skipped_by_both(runs):
    whole = runs["whole"]
    # STEPS steps from STEPS + 1 batches on each rank: rank 1's poisoned batch cost both ranks one step
    assert [whole[r]["step"] for r in range(WORLD)] == [STEPS] * WORLD
    assert [whole[r]["batches"] for r in range(WORLD)] == [STEPS + 1] * WORLD


def test_the_ranks_draw_disjoint_data_and_resume_at_their_own_position(runs):
    whole = {r: runs["whole"][r]["drawn"] for r in range(WORLD)}
    for epoch in range(STEPS // PER_EPOCH):  # within every epoch: disjoint, and together every cut once
        ids = {r: [c for ordinal, batch in whole[r] if ordinal // PER_EPOCH == epoch for c in batch]
               for r in range(WORLD)}
        assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1]), epoch
        assert sorted(ids[0] + ids[1]) == sorted(f"wavs_utt{i}" for i in range(8)), epoch
    for r in range(WORLD):  # stopped + resumed drew exactly the uninterrupted run's batches, in order
        assert runs["stopped"][r]["drawn"] + runs["resumed"][r]["drawn"] == whole[r]
        assert [p for p, _ in whole[r]] == list(range(STEPS + 1))
