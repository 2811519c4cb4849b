"""The whole chain (corpus -> pretrain -> vocoder -> fine-tune both tasks -> evaluate -> bundle) at debug size."""

import json

import numpy as np
import pytest

from model.defaults import TASK_SAMPLING
from model.pipeline import SpeechFlowPipeline
from model.vocos import VocosVocoder
from tests.conftest import speechlike
from training.data.manifest import read_manifest
from training.trainers.recipe import RecipeConfig, run_recipe, trained_steps


def test_debug_recipe_end_to_end_and_resumable(tmp_path, capsys):
    cfg = RecipeConfig(
        work=tmp_path / "work", out=tmp_path / "bundle", preset="debug", hours=0.05, device="cpu",
        pretrain_steps=4, vocoder_steps=2, enhance_steps=3, separate_steps=3, tts_steps=2, duration_steps=2,
        aligner_steps=2, aligner_rounds=1, aligner_round_steps=1,
        eval_utterances=2, eval_nfe=2,
        engines=("espeak", "flite"),  # flite rows have no phones: the aligner labels them for duration + TTS
        train={"lr": 1e-3, "warmup": 2, "save_every": 2, "log_every": 1, "num_workers": 0, "precision": "fp32",
               "batch_seconds": 4.0, "max_seconds": 1.0},
        vocoder_train={"max_seconds": 0.5, "batch_seconds": 1.0}, finetune_train={"warmup": 1},
        vocoder_config={"dim": 32, "intermediate_dim": 64, "layers": 2},
        # a 3-minute corpus has few 2.5-4.5 s prompts
        tts_eval={"prompt_seconds": 1.5, "target_range": (0.5, 10.0), "use_dnsmos": False},
    )
    assert run_recipe(cfg, only=["pretrain"]) is None  # one stage, no bundle yet
    assert trained_steps(cfg.work / "pretrain") == 4 and trained_steps(cfg.work / "enhance") == 0
    assert not (cfg.out / "bundle.json").exists()
    assert run_recipe(cfg) == cfg.out
    for stage, steps in (("pretrain", 4), ("vocoder", 2), ("enhance", 3), ("separate", 3), ("tts", 2),
                         ("duration", 2), ("aligner", 3)):  # aligner: 2 steps + 1 round of 1 step
        assert trained_steps(cfg.work / stage) == steps
    labels = cfg.work / "labels"
    assert json.loads((labels / "round1.info.json").read_text())["aligner_steps"] == 2  # made after exact training
    final = json.loads((labels / "train.info.json").read_text())
    assert final["aligner_steps"] == 3 and final["aligner"] == str((cfg.work / "aligner").resolve())
    assert final["aligned"] > 0 and final["failed"] == 0  # the flite rows
    rows = [u.meta for u in read_manifest(labels / "train_cuts.jsonl.gz")]
    assert all(r["phones"] for r in rows) and any(r["speaker"].startswith("flite") for r in rows)
    info = json.loads((cfg.out / "bundle.json").read_text())
    assert info["tasks"] == ["enhance", "pretrain", "separate", "tts"]
    for task in ("enhance", "separate", "tts"):  # the written (fp16) bundle is what gets evaluated
        assert "ours" in info["evaluation"][task]["overall"]
        assert info["evaluation"][task]["steps"] == 2  # the recipe's eval_nfe, with the task's default guidance
        assert info["evaluation"][task]["guidance"] == TASK_SAMPLING[task].guidance
        assert (cfg.work / "eval" / f"{task}.md").is_file()
    assert "wer_ratio" in info["evaluation"]["tts"]
    alignment = info["evaluation"]["prompt_alignment"]
    assert 0 <= alignment["forced_aligner"]["pooled"] <= 1 and 0 <= alignment["rescaled_durations"]["pooled"] <= 1
    pipe = SpeechFlowPipeline.from_pretrained(cfg.out, device="cpu")
    assert isinstance(pipe.vocoder, VocosVocoder)
    sep, _ = pipe.separate(speechlike(1.0, seed=0), 16000, steps=2)
    assert sep.shape == (2, 16000)
    assert pipe.voices and pipe.durations is not None and pipe.aligner is not None
    speech, _ = pipe.tts("Hello there.", voice=next(iter(pipe.voices)), steps=2)
    assert len(speech) > 0 and np.isfinite(speech).all()  # an untrained duration model: any length

    capsys.readouterr()
    run_recipe(cfg)  # everything is complete: every stage is skipped
    out = capsys.readouterr().out
    assert out.count(": complete (") == 7


def test_recipe_refuses_unknown_stages(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe stage"):
        run_recipe(RecipeConfig(work=tmp_path, out=tmp_path / "b"), only=["pretrian"])
