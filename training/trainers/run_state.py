"""A training run's resumable state: the tensors and metadata of ``train_state.safetensors``, how rank 0 reads
them, and how every other rank receives them (no shared filesystem: only rank 0 ever touches the run directory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from model.checkpoint import read_tensors
from model.errors import CheckpointError


@dataclass
class RunState:
    """Weights, EMA and optimizer moments (``tensors``) plus the counters that place the run in its schedule and
    its data (``meta``, strings as safetensors stores them)."""

    meta: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def counter(self, key: str, default: int = 0) -> int:
        return int(self.meta.get(key, default))


def flatten_optimizer(opt: torch.optim.Optimizer, names: list[str], prefix: str = "optim") -> dict[str, Tensor]:
    """AdamW moments keyed by parameter name (safetensors holds flat tensors only: no pickle); ``prefix`` keeps
    the optimizers of two modules (a net and its critic) apart."""
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{prefix}.{names[idx]}.{key}"] = torch.as_tensor(value)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, names: list[str], tensors: dict[str, Tensor],
                      prefix: str = "optim") -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Tensor]] = {}
    for idx, name in enumerate(names):
        entries = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.rsplit(".", 1)[0] == f"{prefix}.{name}"}
        if entries:
            state[idx] = entries
    sd["state"] = state
    opt.load_state_dict(sd)


def read_state(path: Path) -> RunState:
    tensors, meta = read_tensors(path)  # a damaged file is a CheckpointError naming it
    if "step" not in meta:
        raise CheckpointError(f"cannot read training state {path}: no step in its metadata")
    return RunState(meta, tensors)


def shared_state(path: Path, load: bool, rank: int, world_size: int, device: torch.device) -> RunState | None:
    """The run's state on every rank: rank 0 reads ``path`` (only when ``load``; otherwise an empty state just
    says that one exists), and broadcasts it. None when there is no state. A read error on rank 0 is raised on
    every rank, so that no rank waits for a broadcast that will never come."""
    header: dict | None = None
    state = None
    if rank == 0 and path.is_file():
        try:
            state = read_state(path) if load else RunState()
            header = {"meta": state.meta, "specs": [(k, v.shape, v.dtype) for k, v in state.tensors.items()]}
        except CheckpointError as e:
            header = {"error": str(e)}
    if world_size > 1:
        box = [header]
        dist.broadcast_object_list(box, src=0)
        header = box[0]
    if header is None:
        return None
    if "error" in header:
        raise CheckpointError(header["error"])
    if world_size == 1:
        return state
    tensors = {}
    for key, shape, dtype in header["specs"]:  # one broadcast per tensor: no pickled copy of the whole model
        t = state.tensors[key].to(device) if rank == 0 else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(t, src=0)
        tensors[key] = t
    return RunState(dict(header["meta"]), tensors)
