"""``SpeechFlowModel``: a network, its flow and its feature front end, saved and loaded as one directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import build_from_config, load_weights, read_typed_config, save_net
from .config import ModelConfig
from .flow import FlowMatching
from .network import SpeechFlowTransformer


class SpeechFlowModel(nn.Module):
    """The velocity network plus what is needed to use it: its config (with the mel settings) and its flow."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.net = SpeechFlowTransformer(config.network)
        self.flow = FlowMatching(config.flow)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def generate(
        self,
        cond: Tensor,
        mask: Tensor,
        seeds: Sequence[int],
        *,
        nfe: int = 32,
        solver: str = "midpoint",
        guidance: float = 1.0,
        guidance_until: float = 1.0,
        sway: float = 0.0,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
        **net_kwargs: Any,
    ) -> Tensor:
        """cond (B, T, cond_dim), mask (B, T) -> normalised features (B, T, x_dim); see ``FlowMatching.sample``."""
        return self.flow.sample(
            self.net, cond.to(self.dtype), mask, x_dim=self.config.network.x_dim, seeds=seeds, nfe=nfe,
            solver=solver, guidance=guidance, guidance_until=guidance_until, sway=sway, known=known,
            known_mask=known_mask, **net_kwargs,
        )

    def save_pretrained(
        self, directory: str | os.PathLike, dtype: torch.dtype | None = None, state: dict[str, Tensor] | None = None
    ) -> Path:
        """Write config.json + model.safetensors; ``state`` overrides the weights (e.g. the EMA copy)."""
        return save_net(directory, self.config, self.net, dtype, state)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> SpeechFlowModel:
        config = read_typed_config(directory, ModelConfig.from_dict)
        model = build_from_config(directory, lambda: cls(config))
        load_weights(model.net, directory)
        return model.to(device=device, dtype=dtype).eval()
