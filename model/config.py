"""Configuration dataclasses that travel with the weights (``config.json`` in every model directory)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .features import MelConfig

CONFIG_VERSION = 1
TASKS = ("pretrain", "enhance", "separate", "tts")


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a flat dataclass from a dict, refusing keys it does not know (a typo must not pass silently)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    return cls(**data)


@dataclass
class NetworkConfig:
    """Shape of the Transformer. ``x_dim`` is what the flow generates, ``cond_dim`` what it is conditioned on."""

    dim: int = 256
    depth: int = 6
    heads: int = 4
    ffn_dim: int = 1024
    x_dim: int = 80
    cond_dim: int = 80
    conv_kernel: int = 31
    conv_groups: int = 16
    dropout: float = 0.0
    n_phones: int = 0  # > 0 adds a phone embedding (TTS); 0 = none

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.depth < 2 or self.depth % 2:
            raise ConfigError(f"depth must be even and >= 2 for the U-Net skips, got {self.depth}")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if self.dim % self.conv_groups:
            raise ConfigError(f"dim {self.dim} is not divisible by conv_groups {self.conv_groups}")


# Paper size is ``base`` (24 x 1024, ~330 M); ``tiny`` is what trains in hours on a 2-core CPU.
PRESETS: dict[str, NetworkConfig] = {
    "debug": NetworkConfig(dim=64, depth=2, heads=2, ffn_dim=128, conv_kernel=15, conv_groups=8),
    "tiny": NetworkConfig(dim=256, depth=6, heads=4, ffn_dim=768),
    "small": NetworkConfig(dim=512, depth=12, heads=8, ffn_dim=2048),
    "base": NetworkConfig(dim=1024, depth=24, heads=16, ffn_dim=4096),
}


def preset(name: str, **overrides: Any) -> NetworkConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass
class FlowConfig:
    """Flow-matching path and the pre-training condition (SpeechFlow / Voicebox recipe)."""

    sigma_min: float = 1e-5
    p_uncond: float = 0.1  # probability that the whole condition is dropped
    mask_min: float = 0.7  # otherwise this fraction of frames is masked ...
    mask_max: float = 1.0
    min_span: int = 10  # ... in spans of at least this many frames
    # Empty: trained at t ~ U(0, 1), sampled on any grid. A few-step student: trained only at these times (the
    # Euler grid it is sampled on), its condition never dropped, so it needs no guidance.
    train_times: tuple[float, ...] = ()
    # The scale of the Gaussian x0 the path starts from: 1 for a generative model; 0 for a deterministic student
    # (it starts from zeros, so its one step is a regression of the target and no capacity goes to undoing noise).
    prior_scale: float = 1.0

    def __post_init__(self) -> None:
        self.train_times = tuple(float(t) for t in self.train_times)  # JSON gives a list
        if any(not 0 <= t < 1 for t in self.train_times):
            raise ConfigError(f"FlowConfig.train_times must lie in [0, 1), got {self.train_times}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: task, network shape, flow settings and the feature front end."""

    task: str = "pretrain"
    preset: str = "custom"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    phones: list[str] = field(default_factory=list)  # TTS: the phone vocabulary (ids = positions), else empty
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific metadata (e.g. training provenance)
    # what a request to this model gets when it names none (model.defaults.Sampling fields); empty: the task's
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.phones and len(self.phones) != self.network.n_phones:
            raise ConfigError(f"{len(self.phones)} phone symbols but the network embeds {self.network.n_phones}")

    @property
    def student(self) -> dict[str, Any]:
        """What a few-step student records of its training (steps, teacher, loss, ...); empty for a teacher."""
        return self.extra.get("student", {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        version = data.get("version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise ConfigError(f"config version {version} is newer than this code ({CONFIG_VERSION}); upgrade")
        try:
            network = _from_dict(NetworkConfig, data.pop("network", {}))
            flow = _from_dict(FlowConfig, data.pop("flow", {}))
            mel = MelConfig.from_dict(data.pop("mel", {}))
            return _from_dict(cls, {**data, "network": network, "flow": flow, "mel": mel})
        except TypeError as e:
            raise ConfigError(f"malformed config: {e}") from e
