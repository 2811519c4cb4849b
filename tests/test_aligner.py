"""The prompt aligner: Viterbi forced alignment, the frame classifier's checkpoint, training and the comparison with
the duration-rescaling aligner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.aligner import AlignerConfig, PromptAligner, viterbi_durations
from model.checkpoint import CONFIG_FILE
from model.duration import DurationError, DurationModel
from model.errors import CheckpointError
from model.text import PhoneVocab
from tests.conftest import write_aligned_corpus
from training.data.manifest import read_manifest
from training.trainers.aligner import compare_prompt_aligners, default_train_config, train_aligner

VOCAB = PhoneVocab.default()


def posteriors(labels: list[int], vocab_size: int, sharp: float = 4.0) -> np.ndarray:
    """(T, V) log-probabilities that favour ``labels[t]`` at frame t."""
    logits = np.zeros((len(labels), vocab_size))
    logits[np.arange(len(labels)), labels] = sharp
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def test_viterbi_recovers_the_segmentation_the_posteriors_show() -> None:
    a, b, c = 5, 9, 12
    frames = [a] * 3 + [b] * 2 + [c] * 5
    assert viterbi_durations(posteriors(frames, 20), np.array([a, b, c])).tolist() == [3, 2, 5]
    # a repeated phone is two phones: each keeps >= 1 frame, and all frames are used
    durations = viterbi_durations(posteriors([a] * 6 + [b] * 2, 20), np.array([a, a, b]))
    assert durations.sum() == 8 and durations.min() >= 1 and durations[2] == 2
    # a phone the audio does not show still gets its one frame, in order
    durations = viterbi_durations(posteriors([a] * 4 + [c] * 4, 20), np.array([a, b, c]))
    assert durations.tolist() in ([3, 1, 4], [4, 1, 3])


def test_viterbi_finds_the_best_segmentation_by_brute_force() -> None:
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(30):
        t, n = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        if n > t:
            continue
        log_probs = np.log(rng.dirichlet(np.ones(6), size=t))
        ids = rng.integers(1, 6, size=n)
        best = -np.inf
        for cuts in itertools.combinations(range(1, t), n - 1):  # every split of t frames into n non-empty runs
            durations = np.diff([0, *cuts, t])
            best = max(best, log_probs[np.arange(t), np.repeat(ids, durations)].sum())
        found = viterbi_durations(log_probs, ids)
        assert found.sum() == t and found.min() >= 1
        assert np.isclose(log_probs[np.arange(t), np.repeat(ids, found)].sum(), best)


def test_viterbi_refuses_impossible_alignments() -> None:
    with pytest.raises(DurationError, match="does the transcript match"):
        viterbi_durations(posteriors([1, 2], 10), np.array([3, 4, 5]))
    with pytest.raises(DurationError, match="non-empty"):
        viterbi_durations(posteriors([1, 2], 10), np.array([], dtype=np.int64))


def test_checkpoint_round_trip_and_strict_loading(tmp_path: Path) -> None:
    torch.manual_seed(0)
    aligner = PromptAligner(AlignerConfig(channels=16, dilations=(1, 2)))
    aligner.save_pretrained(tmp_path / "a")
    again = PromptAligner.from_pretrained(tmp_path / "a")
    feats = torch.randn(50, aligner.config.mel.n_mels)
    assert torch.equal(aligner.log_posteriors(feats), again.log_posteriors(feats))
    ids = VOCAB.encode(["h", "@", "l", "oU"])
    durations = again.align(feats, ids)
    assert durations.sum() == 50 and durations.min() >= 1
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    config["channels"] = 32  # weights of another shape
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        PromptAligner.from_pretrained(tmp_path / "a")


def test_padding_does_not_change_an_utterance_output() -> None:
    torch.manual_seed(0)
    net = PromptAligner(AlignerConfig(channels=16, dilations=(1, 2))).net.eval()
    feats = torch.randn(1, 30, 80)
    padded = torch.cat([feats, torch.randn(1, 20, 80)], dim=1)
    mask = torch.arange(50)[None] < 30
    alone = net(feats, torch.ones(1, 30, dtype=torch.bool))
    torch.testing.assert_close(net(padded, mask)[:, :30], alone)


@pytest.mark.filterwarnings("ignore:the prompt is")  # an untrained duration model is far off
def test_training_learns_alignments_better_than_chance(tmp_path: Path) -> None:
    sentences = ["The cat sat on the mat.", "Rain fell on the quiet town.", "She sells sea shells by the shore.",
                 "A big dog ran home.", "Seven swans swam south."]
    manifest = write_aligned_corpus(tmp_path, sentences)
    train = default_train_config(steps=60, lr=3e-3, warmup=5, batch_seconds=8.0, max_seconds=2.0, log_every=10,
                                 save_every=1000, precision="fp32", device="cpu")
    out = train_aligner(manifest, tmp_path / "run", AlignerConfig(channels=32, dilations=(1, 2, 4)), train)
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0], losses
    aligner = PromptAligner.from_pretrained(out)
    report = compare_prompt_aligners(read_manifest(manifest), aligner, DurationModel())
    assert report["utterances"] == len(sentences) and report["frames"] > 0
    # trained on these very utterances, the aligner must beat an untrained duration model's uniform split by far
    assert report["forced_aligner"]["pooled"] > report["rescaled_durations"]["pooled"] + 0.1, report
    # resume continues the same run
    more = train_aligner(manifest, tmp_path / "run", None, default_train_config(
        **{**train.__dict__, "steps": 70}), resume=True)
    assert PromptAligner.from_pretrained(more).config.extra["training"]["step"] == 70


def test_flite_boundaries_compare_phone_ends_with_flites_own(monkeypatch) -> None:
    import training.trainers.aligner as aligner_module

    spoken = []

    def fake_flite(text: str, voice: str):  # 1 s of audio whose phones end where flite says they do
        spoken.append(voice)
        return np.zeros(16000, np.float32), [("pau", 0.1), *[("x", 0.1 + 0.8 * (k + 1) / 3) for k in range(3)],
                                             ("pau", 1.0)]

    monkeypatch.setattr(aligner_module, "_flite_with_phone_ends", fake_flite)
    monkeypatch.setattr(aligner_module, "text_to_phones", lambda text: ["_", *text.split(), "_:"])

    class Exact:  # an aligner that finds flite's boundaries to the frame: 10 / 27 / 27 / 26 / 10 frames
        vocab, config = VOCAB, AlignerConfig()

        def align(self, feats, ids):
            assert feats.shape[0] == 101 and len(ids) == 5
            return np.array([10, 27, 27, 26, 11])

    report = aligner_module.flite_boundary_accuracy(["a b d", "a b", "t I n", "s i: z"], Exact(), None, n=2,
                                                    voices=("slt", "awb"))
    assert report["utterances"] == 2 and report["tried"] == 3  # "a b" has 2 phones, flite 3: skipped
    assert report["boundaries"] == 6 and spoken == ["slt", "awb", "slt"]
    errors = report["forced_aligner"]
    assert errors["within_20ms"] == 1.0 and errors["mean_ms"] < 5  # ends 0.37 / 0.64 / 0.90 vs 0.367 / 0.633 / 0.9
    with pytest.raises(ValueError, match="nothing to measure"):
        aligner_module.flite_boundary_accuracy(["a"], None, None)
