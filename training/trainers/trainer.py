"""One training loop for every task: AdamW with warm-up + cosine decay, gradient clipping, EMA, autocast,
DistributedDataParallel under torchrun, a JSONL log, atomic checkpoints and exact resumption.

A run directory is a loadable model directory (config.json + model.safetensors holding the EMA weights) plus
``train_state.safetensors`` (raw weights, EMA, optimizer moments, step, data position): one file, replaced
atomically, so a run killed at any moment resumes from its last save and loses only the steps since.

Under torchrun only rank 0 reads and writes the run directory: the state it reads is broadcast to the other ranks,
and a SIGTERM that reaches any rank stops every rank after the same step (the flag is all-reduced each step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from model.checkpoint import write_tensors
from model.devices import resolve_device, resolve_dtype, use_tf32
from model.errors import CheckpointError
from training.data.loading import DataPosition, PositionedBatch, derive_seed

from .run_state import RunState, flatten_optimizer, restore_optimizer, shared_state

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
LOG_FILE = "log.jsonl"
MAX_SKIPPED_STEPS = 10  # consecutive non-finite gradients before a run gives up


@dataclass
class TrainConfig:
    steps: int = 100_000
    lr: float = 2e-4
    warmup: int = 1_000
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * this
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    batch_seconds: float = 48.0  # padded audio per batch and rank (16 x 3 s)
    max_seconds: float = 3.0  # crop length (the paper crops to 1,600 frames = 16 s)
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"  # auto = bf16 autocast where the device runs bf16 fast (model.devices), else fp32; bf16
    num_workers: int = 1
    num_buckets: int = 10  # Lhotse's duration buckets (cuts of similar length batch together: less padding)
    shuffle_buffer: int = 5000  # cuts the sampler holds to bucket and shuffle (with their audio when from Shar)
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores). 1 each for runs that share a CPU

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainable(Protocol):
    """What the loop needs from a model (SpeechFlowModel, VocosVocoder): the module to train, a config whose
    ``extra`` dict records provenance, and a way to write a model directory from given weights."""

    net: nn.Module
    config: Any

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        state: dict[str, Tensor] | None = None) -> Path: ...


class Objective(Protocol):
    """Turns a batch into a scalar loss; ``net`` may be DDP-wrapped. Randomness comes only from rng / gen, which
    the loop seeds per step so that a resumed run is the same run."""

    def __call__(
        self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator, gen: torch.Generator
    ) -> Tensor: ...


class AdversarialObjective(Objective, Protocol):
    """An objective with a ``critic`` trained against the net (GAN discriminators): after each generator step the
    loop steps the critic on ``critic_loss()``, which scores the batch the objective was just called on. The
    critic's weights and optimizer moments are part of the run's state. ``metrics`` (the last step's separate
    terms) are averaged into the log."""

    critic: nn.Module
    metrics: dict[str, float]

    def critic_loss(self) -> Tensor: ...


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class EMA:
    """Exponential moving average of the weights in fp32; the warm-up (1+n)/(10+n) lets short runs use it too."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.float(), 1 - d)
            else:
                self.shadow[k].copy_(v)


class Trainer:
    def __init__(
        self,
        model: Trainable,
        objective: Objective,
        loader_factory: Any,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
    ) -> None:
        """``loader_factory(position, rank, world_size)`` returns an iterator of this rank's batches from its data
        ``position`` on: `PositionedBatch`es (a batch and the position after it, `training.data.loading`), or plain
        dicts of tensors (the position then just counts them)."""
        self.model, self.objective, self.loader_factory, self.cfg = model, objective, loader_factory, cfg
        self.out = Path(out_dir)
        if cfg.threads > 0:  # two runs at 2 threads on 2 cores spin-wait on each other: 20x slower than 1 each
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        use_tf32(self.device)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.step = 0
        self.batches = 0  # batches drawn by this rank (ahead of step by the skipped ones)
        self.position = DataPosition()  # this rank's place in its data, after the last batch it trained on
        self.skipped = 0  # consecutive non-finite steps
        self._stop = False

    # --- state -----------------------------------------------------------------------------------------------
    def _positions(self) -> list[dict[str, int]]:
        """Every rank's data position (ranks reading their own Shar shards are at different places)."""
        mine = dataclasses.asdict(self.position)
        if self.dist.world_size == 1:
            return [mine]
        every: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(every, mine)
        return every

    def save(self, net: nn.Module, opt: torch.optim.Optimizer, ema: EMA,
             critic: tuple[nn.Module, torch.optim.Optimizer] | None = None) -> None:
        positions = self._positions()  # a collective: every rank, before rank 0 alone writes
        if not self.dist.is_main:
            return
        self.model.config.extra["training"] = {"step": self.step, "config": dataclasses.asdict(self.cfg)}
        self.model.save_pretrained(self.out, state=ema.shadow)
        names = list(dict(net.named_parameters()))
        tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in ema.shadow.items()}
        tensors |= flatten_optimizer(opt, names)
        if critic is not None:
            module, critic_opt = critic
            tensors |= {f"critic.{k}": v for k, v in module.state_dict().items()}
            tensors |= flatten_optimizer(critic_opt, list(dict(module.named_parameters())), prefix="critic_optim")
        meta = {"step": str(self.step), "batches": str(self.batches), "skipped": str(self.skipped),
                "data_position": json.dumps({"world_size": self.dist.world_size, "ranks": positions}),
                "train_config": json.dumps(dataclasses.asdict(self.cfg))}
        write_tensors(self.out / STATE_FILE, tensors, metadata=meta)

    def restore(self, state: RunState, net: nn.Module, opt: torch.optim.Optimizer, ema: EMA,
                critic: tuple[nn.Module, torch.optim.Optimizer] | None = None) -> None:
        tensors = state.tensors
        saved_critic = {k[len("critic."):]: v for k, v in tensors.items() if k.startswith("critic.")}
        if bool(saved_critic) != (critic is not None):
            raise CheckpointError(f"{self.out} was trained {'with' if saved_critic else 'without'} an adversary "
                                  f"(discriminators): resume it the way it was started")
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        if critic is not None:
            module, critic_opt = critic
            module.load_state_dict(saved_critic, strict=True)
            restore_optimizer(critic_opt, list(dict(module.named_parameters())), tensors, prefix="critic_optim")
        for k in ema.shadow:
            ema.shadow[k].copy_(tensors[f"ema.{k}"])
        restore_optimizer(opt, list(dict(net.named_parameters())), tensors)
        self.step = state.counter("step")
        self.batches = state.counter("batches", self.step)  # states saved before the counter: one batch a step
        self.skipped = state.counter("skipped")
        self.position = self._restored_position(state.meta.get("data_position"))

    def _restored_position(self, saved: str | None) -> DataPosition:
        """This rank's saved data position. A state from before CutSets (no position), or one saved with another
        number of processes, continues the schedule and weights exactly but starts a fresh epoch of data."""
        if saved is None:
            log.warning("the training state has no data position (saved before the Lhotse data path): the data "
                        "order starts afresh at epoch 0")
            return DataPosition()
        info = json.loads(saved)
        if info["world_size"] != self.dist.world_size:
            epoch = 1 + max(p["epoch"] for p in info["ranks"])
            log.warning("the run was saved with %d processes, resumed with %d: data start afresh at epoch %d",
                        info["world_size"], self.dist.world_size, epoch)
            return DataPosition(epoch=epoch)
        return DataPosition(**info["ranks"][self.dist.rank])

    # --- loop ------------------------------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        auto = self.cfg.precision == "auto" and resolve_dtype("auto", self.device) == torch.bfloat16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=auto or self.cfg.precision == "bf16")

    def fit(self, resume: bool = False) -> Path:
        cfg = self.cfg
        net = self.model.net.to(self.device)
        state = shared_state(self.out / STATE_FILE, resume, self.dist.rank, self.dist.world_size, self.device)
        if state is not None and not resume:
            raise CheckpointError(f"{self.out} already holds a training run: pass --resume to continue it")
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        ema = EMA(net, cfg.ema_decay)
        critic = self._critic()
        if state is not None:
            self.restore(state, net, opt, ema, critic)
            del state  # the weights now live in net, opt and ema
            self._truncate_log()
        ema.shadow = {k: v.to(self.device) for k, v in ema.shadow.items()}
        train_net: nn.Module = net
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_net = nn.parallel.DistributedDataParallel(net, device_ids=ids)

        previous = signal.signal(signal.SIGTERM, self._request_stop) if self._main_thread() else None
        batches: Iterator[PositionedBatch | dict[str, Tensor]] = iter(
            self.loader_factory(self.position, self.dist.rank, self.dist.world_size))
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.dist.is_main, desc="train", unit="step",
                   dynamic_ncols=True)
        window: list[float] = []
        terms: list[dict[str, float]] = []
        t_last, step_last = time.perf_counter(), self.step
        try:
            while self.step < cfg.steps and not self._agreed_stop():
                batch = self._next(batches)
                seed = [cfg.seed, self.step, self.dist.rank]
                rng = np.random.default_rng(seed)
                gen = torch.Generator(self.device).manual_seed(derive_seed(*seed))
                lr = cfg.lr_at(self.step)
                for group in opt.param_groups:
                    group["lr"] = lr
                net.train()
                with self.autocast():
                    loss = self.objective(train_net, batch, rng, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip))
                if not math.isfinite(grad_norm):  # a bad batch must not poison the weights: skip it
                    self.skipped += 1  # DDP ranks agree: the norm is of the all-reduced gradients
                    if self.skipped > MAX_SKIPPED_STEPS:
                        raise FloatingPointError(f"{self.skipped} consecutive non-finite steps at step {self.step}")
                    continue
                self.skipped = 0
                opt.step()
                ema.update(net, self.step)
                if critic is not None:
                    self._critic_step(*critic, lr)
                self.step += 1
                window.append(float(loss.detach()))
                terms.append(getattr(self.objective, "metrics", {}))
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rate = (self.step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, self.step
                    self._log({"step": self.step, "loss": float(np.mean(window)), "lr": lr, "grad_norm": grad_norm,
                               "steps_per_s": rate, "world_size": self.dist.world_size, "time": time.time(),
                               **_mean_terms(terms)})
                    bar.set_postfix(loss=f"{np.mean(window):.4f}", lr=f"{lr:.2e}")
                    window, terms = [], []
                if self.step % cfg.save_every == 0:
                    self.save(net, opt, ema, critic)
            self.save(net, opt, ema, critic)
            if self.dist.world_size > 1:
                dist.barrier()  # no rank returns before rank 0's checkpoint is on disk
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.out

    def _critic(self) -> tuple[nn.Module, torch.optim.Optimizer] | None:
        """The objective's critic on this device with its own AdamW (same schedule as the net), or None."""
        module: nn.Module | None = getattr(self.objective, "critic", None)
        if module is None:
            return None
        module.to(self.device)
        cfg = self.cfg
        return module, torch.optim.AdamW(module.parameters(), lr=cfg.lr, betas=cfg.betas,
                                         weight_decay=cfg.weight_decay)

    def _critic_step(self, module: nn.Module, opt: torch.optim.Optimizer, lr: float) -> None:
        """One critic update on the batch the net was just trained on. Under DDP its gradients are averaged by
        hand (it is not DDP-wrapped: the objective calls it on real and generated audio in one step)."""
        objective: AdversarialObjective = self.objective  # type: ignore[assignment]
        for group in opt.param_groups:
            group["lr"] = lr
        module.train()
        with self.autocast():
            loss = objective.critic_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist.world_size > 1:
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.dist.world_size
        if math.isfinite(float(nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip))):
            opt.step()

    def _next(self, batches: Iterator[PositionedBatch | dict[str, Tensor]]) -> dict[str, Tensor]:
        item = next(batches)
        if isinstance(item, PositionedBatch):
            item, self.position = item.tensors, item.position
        else:
            self.position = DataPosition(self.position.epoch, self.position.batch + 1)
        self.batches += 1
        return {k: v.to(self.device, non_blocking=True) for k, v in item.items()}

    def _log(self, row: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / LOG_FILE).open("a") as f:
                f.write(json.dumps(row) + "\n")

    def _truncate_log(self) -> None:
        """Drop log rows written after the last save (they belong to steps that will be trained again)."""
        path = self.out / LOG_FILE
        if self.dist.is_main and path.is_file():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line in rows if json.loads(line)["step"] <= self.step]
            path.write_text("".join(line + "\n" for line in kept))

    def _agreed_stop(self) -> bool:
        """Whether any rank was asked to stop (MAX over ranks, every step): all ranks leave after the same step,
        where one leaving alone would leave the others waiting in their next gradient all-reduce."""
        if self.dist.world_size == 1:
            return self._stop
        flag = torch.tensor([float(self._stop)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM: finish the current step, save, and exit cleanly (a SIGKILL loses only the steps since the last
        save)."""
        self._stop = True

    @staticmethod
    def _main_thread() -> bool:
        import threading

        return threading.current_thread() is threading.main_thread()


def _mean_terms(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-term means over the logged window (an objective's ``metrics``); {} for objectives without them."""
    keys = {k for row in rows for k in row}
    return {k: float(np.mean([row[k] for row in rows if k in row])) for k in sorted(keys)}
