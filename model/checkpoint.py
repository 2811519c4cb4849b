"""Model directories: ``config.json`` + ``model.safetensors``. No pickle; strict, loud loading; atomic writes.

Every tensor file we write carries a sha256 of its tensors in its metadata, so that a flipped bit in the weights
(which safetensors' own parsing cannot see) fails loading instead of serving a damaged model; files without one
(written before it) still load. Every loading problem is one CheckpointError line that names the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, ConfigError

T = TypeVar("T")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DIGEST_KEY = "speechflow.sha256"  # safetensors metadata key of the tensors' checksum
# what parsing a damaged file or building a network from a bad config raises besides CheckpointError/ConfigError
_DAMAGE = (SafetensorError, OSError, ValueError, TypeError, KeyError, ArithmeticError, RuntimeError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Write via ``write(tmp_path)`` into a temp file beside ``path``, then rename over it: a kill mid-write never
    leaves a half-written file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared and served
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        v = tensors[key].detach().contiguous().cpu()
        h.update(f"{key}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().data)  # bytes as stored, whatever the dtype (bf16 too)
    return h.hexdigest()


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**(metadata or {}), DIGEST_KEY: tensors_digest(contiguous)}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=metadata))


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata, checked against its checksum when it has one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except _DAMAGE as e:
        raise CheckpointError(f"cannot read {path}: {_one_line(e)} (truncated or corrupt?)") from e
    expected = metadata.pop(DIGEST_KEY, None)
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(f"cannot read {path}: its tensors do not match their checksum (the file is corrupt)")
    return tensors, metadata


def save_model_dir(
    directory: str | os.PathLike,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a model directory; ``dtype`` (e.g. fp16 for shipping) converts floating-point weights only."""
    directory = Path(directory)
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    write_tensors(directory / WEIGHTS_FILE, state_dict)
    write_json(directory / CONFIG_FILE, config)
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a model directory: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {_one_line(e)} (truncated or corrupt?)") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {_one_line(e)}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object (found {type(data).__name__})")
    return data


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a model directory: {WEIGHTS_FILE} is missing")
    return read_tensors(path)[0]


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error that names it."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not match the network ({'; '.join(problems)})")
    module.load_state_dict(state, strict=True)


def load_weights(module: torch.nn.Module, directory: str | os.PathLike) -> None:
    """Strictly load a model directory's weights into ``module`` in fp32 (shipped copies may be fp16)."""
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in read_weights(directory).items()}
    load_state_strict(module, state, source=str(directory))


def check_kind(data: dict[str, Any], kind: str, version: int, label: str) -> dict[str, Any]:
    """A config dict without its "kind" key, after checking it names ``kind`` and is not newer than ``version``
    (a vocoder or duration directory must never load as something else)."""
    data = dict(data)
    found = data.pop("kind", None)
    if found != kind:
        raise ConfigError(f"not a {label} config: kind is {found!r}, expected {kind!r}")
    got = data.get("version", version)
    if not isinstance(got, int) or got > version:
        raise ConfigError(f"{label} config version {got!r} is newer than this code ({version})")
    return data


def check_fields(cls: type, data: dict[str, Any], kind: str, version: int, label: str) -> dict[str, Any]:
    """``check_kind``, then refuse keys the dataclass ``cls`` does not have (a typo must not pass silently)."""
    data = check_kind(data, kind, version, label)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    return data


def read_typed_config(directory: str | os.PathLike, from_dict: Callable[[dict[str, Any]], T]) -> T:
    """A model directory's config.json parsed by ``from_dict``; any problem is a CheckpointError naming the file."""
    config = read_config(directory)
    try:
        return from_dict(config)
    except _DAMAGE as e:  # ConfigError is a ValueError; a wrongly typed value raises TypeError or worse
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: {_one_line(e)}") from e


def build_from_config(directory: str | os.PathLike, build: Callable[[], T]) -> T:
    """``build()`` (a model from its parsed config); a config that parses but cannot build a network (a list where
    a size goes, zero heads) is a CheckpointError naming the config file, not a traceback from deep in torch."""
    try:
        return build()
    except _DAMAGE as e:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: cannot build the network: {_one_line(e)}") from e


def save_net(directory: str | os.PathLike, config: Any, net: torch.nn.Module, dtype: torch.dtype | None = None,
             state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``config.to_dict()`` + the net's weights (or ``state``, e.g. the trainer's EMA copy) as a model
    directory."""
    return save_model_dir(directory, config.to_dict(), state if state is not None else net.state_dict(), dtype=dtype)


M = TypeVar("M", bound="NetModel")


class NetModel:
    """A small model = its config + one ``nn.Module`` in ``net`` (the vocoder, the duration model, the prompt
    aligner): device, ``.to``, an eval-mode context and the strict model-directory round trip, written once.
    Subclasses set ``config_class`` (a config with ``from_dict`` / ``to_dict``) and build ``net`` in ``__init__``."""

    config_class: ClassVar[type]
    config: Any
    net: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def to(self: M, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> M:
        self.net.to(device=device, dtype=dtype)
        return self

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The net in eval mode (no dropout) for the block, then back to the mode it was in (a trainer may hold it)."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write config.json + model.safetensors; `state` overrides the weights (the trainer passes the EMA copy)."""
        return save_net(directory, self.config, self.net, dtype, state)

    @classmethod
    def from_pretrained(cls: type[M], directory: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> M:
        """Rebuild from a model directory; any config or weight mismatch is a CheckpointError, never random weights."""
        config = read_typed_config(directory, cls.config_class.from_dict)
        model = build_from_config(directory, lambda: cls(config))  # type: ignore[call-arg]
        load_weights(model.net, directory)
        model.net.eval()
        return model.to(device=device, dtype=dtype)
