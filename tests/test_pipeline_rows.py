"""Every task's plan through one live batch, next to other requests that join late or leave: the audio equals the
offline pipeline's for the request alone (float32; tolerance relative to the waveform's peak, or absolute for
waveforms in [-1, 1]: 1e-4 through the mask reconstruction, 1e-3 through Griffin-Lim, whose iterations amplify float
rounding in the features)."""

import warnings

import numpy as np
import pytest
import torch

from model.config import ModelConfig, preset
from model.defaults import Sampling
from model.generation import LiveBatch
from model.infilling import InfillRequest
from model.modeling import SpeechFlowModel
from model.pipeline import SpeechFlowPipeline
from tests.conftest import speechlike

S = Sampling(steps=6, guidance=2.0, solver="midpoint")
SETTINGS = S.settings()  # the keyword arguments the pipeline takes


@pytest.fixture
def pipe(debug_model) -> SpeechFlowPipeline:
    separate = SpeechFlowModel(ModelConfig(task="separate", network=preset("debug", x_dim=160))).eval()
    torch.nn.init.normal_(separate.net.out_proj.weight, std=0.1)  # velocities that are not all zero
    return SpeechFlowPipeline({"pretrain": debug_model, "enhance": debug_model, "separate": separate})


def offline(pipe: SpeechFlowPipeline, task: str, wav: np.ndarray, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "infill":
            return pipe.infill(wav, 16000, [(0.3, 0.7)], **SETTINGS, seed=seed)[0]
        return getattr(pipe, task)(wav, 16000, **SETTINGS, seed=seed)[0]  # every field: not the task's defaults


def plan(pipe: SpeechFlowPipeline, task: str, wav: np.ndarray, seed: int):
    if task == "infill":
        return pipe.plan_infill(InfillRequest(wav, 16000, [(0.3, 0.7)]), sampling=S, seed=seed)
    return pipe.plan_task(task, wav, 16000, seed=seed, sampling=S)


def run_together(pipe: SpeechFlowPipeline, task: str, plans: list, join_after: list[int], leave=None):
    """Plan i joins after join_after[i] steps; ``leave`` (plan index, step) drops that plan's rows mid-way."""
    live = LiveBatch(pipe.model("pretrain" if task == "infill" else task), S)
    step = 0
    while step == 0 or len(live):
        for i, p in enumerate(plans):
            if join_after[i] == step:
                live.join(p.rows)
        if leave is not None and leave[1] == step:
            live.leave(plans[leave[0]].rows)
        live.step()
        step += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [p.assemble([p.piece(i, r.output) for i, r in enumerate(p.rows)]) if all(
            r.output is not None for r in p.rows) else None for p in plans]


@pytest.mark.parametrize("task", ["enhance", "separate", "infill"])
def test_a_request_joined_mid_way_next_to_others_sounds_as_it_does_alone(pipe, task):
    wavs = [speechlike(s, seed=i) for i, s in enumerate([1.0, 7.5, 0.6])]  # 7.5 s: two windows
    plans = [plan(pipe, task, w, seed=10 + i) for i, w in enumerate(wavs)]
    # plan 0 starts alone, plan 2 joins after one step and leaves (cancelled) two steps later, plan 1 joins late
    together = run_together(pipe, task, plans, join_after=[0, 2, 1], leave=(2, 3))
    tol = 1e-3 if task == "infill" else 1e-4
    for i in range(2):
        alone = offline(pipe, task, wavs[i], seed=10 + i)
        # relative to the peak: the untrained debug model's infill through Griffin-Lim peaks near 80, not 1
        np.testing.assert_allclose(together[i], alone, atol=tol * max(1.0, float(np.abs(alone).max())))
    assert together[2] is None  # its rows never finished
