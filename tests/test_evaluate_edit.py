"""The editing evaluation: the word changes it makes, its measures on known inputs, and a run on the shipped
bundle over a small espeak-ng corpus (the metrics a listener would use, each beside its reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_evaluate_tts import corpus  # noqa: F401  (the fixture: 3 sentences x 2 espeak-ng voices)
from training.evaluation import evaluate_edit as ev


def test_edited_text_replaces_consecutive_words_and_keeps_punctuation():
    sentence = "I would like to buy a new car next year."
    text, positions = ev.edited_text(sentence, np.random.default_rng(0), 2)
    old, new = sentence.split(), text.split()
    assert len(new) == len(old) and text.endswith(".") and len(positions) == 2
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    assert changed == positions and all(new[i].strip(".") in ev.REPLACEMENTS for i in positions)


def test_words_heard_counts_only_the_new_words_found_in_place():
    text = "the purple boat drifted"
    assert ev.words_heard(text, [1], "The purple boat drifted.") == 1.0
    assert ev.words_heard(text, [1], "the people boat drifted") == 0.0
    assert ev.words_heard(text, [1, 2], "the purple goat drifted") == 0.5


def test_flux_is_large_at_a_jump_and_small_in_a_steady_sound():
    steady = np.zeros((50, 80))
    jump = steady.copy()
    jump[25:] += 3.0
    assert ev.flux(steady).max() == 0.0 and ev.flux(jump)[25] == pytest.approx(3.0)
    assert ev.edge_flux(ev.flux(jump), [24]) == pytest.approx(3.0) and ev.edge_flux(ev.flux(jump), [10]) == 0.0


def test_an_edit_evaluation_on_the_shipped_bundle(demo_pipeline, corpus, tmp_path):  # noqa: F811
    from model import recognizer

    if not recognizer.available():
        pytest.skip("needs a speech recogniser (speechflow[asr])")
    pipe, _ = demo_pipeline
    results = ev.run_edit_evaluation(pipe, corpus, n=2, seed=0, json_out=tmp_path / "edit.json",
                                     tts_kwargs={"steps": 4}, extra_config={"bundle": "demo"})
    saved = json.loads(Path(tmp_path / "edit.json").read_text())
    assert saved["config"]["task"] == "edit" and saved["config"]["n"] == 2 and saved["config"]["bundle"] == "demo"
    assert set(saved["overall"]) == set(ev.SUMMARY)
    for row in results["cases"]:
        assert row["edited_text"] != row["text"] and 0 < row["regenerated_s"] < 3
        assert 0 <= row["heard_edit"] <= 1 and 0 <= row["heard_tts"] <= 1
        assert -1 <= row["similarity_edit"] <= 1 and row["flux_edit"] > 0 and row["flux_original"] > 0
