"""Speech editing: which words changed, the edited recording's frames, the splice back into the original, and the
whole edit on the shipped bundle (the changed word heard, the rest of the recording untouched)."""

import numpy as np
import pytest

from model.editing import (
    FADE_S,
    MARGIN_S,
    FrameClock,
    Layout,
    edited_sequence,
    find_changes,
    layout_edit,
    splice,
)
from model.errors import SettingError
from model.text import text_to_phone_words
from tests.conftest import DEMO_BUNDLE


def changes_between(old, new):
    (old_symbols, old_words), (new_symbols, new_words) = text_to_phone_words(old), text_to_phone_words(new)
    return old_symbols, new_symbols, find_changes(old_words, new_words, len(new_symbols))


def test_changed_words_are_found_as_phone_ranges_whatever_the_case_and_punctuation():
    old_symbols, new_symbols, changes = changes_between("The cat sat on the mat.", "the Dog sat on the mat")
    [change] = changes
    assert (change.before, change.after) == ("cat", "Dog")
    for symbols, (first, end), word in ((old_symbols, change.old, "cat"), (new_symbols, change.new, "dog")):
        alone, [(_, f, e)] = text_to_phone_words(word)
        assert symbols[first:end] == alone[f:e]


def test_insertions_deletions_and_several_changes():
    _, _, [inserted] = changes_between("I like cats.", "I really like cats.")
    assert inserted.before == "" and inserted.after == "really" and inserted.old[0] == inserted.old[1]
    _, _, [deleted] = changes_between("I really like cats.", "I like cats.")
    assert deleted.before == "really" and deleted.after == "" and deleted.new[0] == deleted.new[1]
    _, _, two = changes_between("one two three four five", "one TOO three four hive")
    assert [(c.before, c.after) for c in two] == [("two", "TOO"), ("five", "hive")]
    _, _, [at_end] = changes_between("one two", "one two three")
    assert at_end.after == "three" and at_end.old[0] == at_end.old[1] > 0


def test_nothing_changed_is_an_error_naming_the_text():
    with pytest.raises(SettingError, match="nothing to edit") as e:
        changes_between("Hello, world!", "hello world")
    assert e.value.param == "text"


def test_the_edited_sequence_keeps_the_untouched_phones_and_their_frames():
    old_symbols, new_symbols, changes = changes_between("The cat sat on the mat.", "The dog sat on the mat.")
    symbols, kept = edited_sequence(old_symbols, new_symbols, changes)
    assert symbols == new_symbols and (kept < 0).sum() == changes[0].new[1] - changes[0].new[0]
    old_frames = np.arange(1, len(old_symbols) + 1) % 7 + 3  # any aligned durations
    new_frames = np.where(kept >= 0, old_frames[kept.clip(min=0)], 5)
    layout = layout_edit(kept, new_frames, old_frames, np.arange(len(symbols)), margin=4)
    assert layout.frames == new_frames.sum()
    # kept frames copy the original's in order; new ones come from nowhere; each change has its margins
    a = int(np.concatenate([[0], np.cumsum(old_frames)])[changes[0].old[0]])
    assert np.array_equal(layout.source[:a], np.arange(a))
    first_new = int(np.flatnonzero(layout.source < 0)[0])
    assert first_new == a and layout.generate[a - 4 : a].all() and not layout.generate[: a - 4].any()
    last_new = int(np.flatnonzero(layout.source < 0)[-1])
    assert layout.generate[last_new + 1 : last_new + 5].all() and not layout.generate[last_new + 5 :].any()
    assert layout.source[last_new + 1] == np.concatenate([[0], np.cumsum(old_frames)])[changes[0].old[1]]
    assert np.array_equal(layout.labels, np.repeat(np.arange(len(symbols)), new_frames))


def test_a_deletion_regenerates_the_margins_around_the_join():
    kept = np.array([0, 1, 3])  # phone 2 deleted
    layout = layout_edit(kept, np.array([5, 5, 5]), np.array([5, 5, 5, 5]), np.zeros(3, np.int64), margin=2)
    assert layout.source.tolist() == [*range(10), *range(15, 20)]
    assert np.flatnonzero(layout.generate).tolist() == [8, 9, 10, 11]


def test_splice_keeps_the_original_samples_outside_the_regenerated_runs_and_fades_inside():
    sr = 1000
    clock = FrameClock(hop=10, model_sr=100, sr=sr)  # a frame is 100 samples here
    original = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    # frames 3..5 replaced by two new frames: the output is 100 samples shorter
    source = np.array([0, 1, 2, -1, -1, 6, 7, 8, 9])
    layout = Layout(source, source < 0)
    new = np.full(200, 9.0, np.float32)
    out = splice(original, layout, [new], clock)
    fade = int(FADE_S * sr)
    assert len(out) == 900
    np.testing.assert_array_equal(out[:300], original[:300])
    np.testing.assert_array_equal(out[500:], original[600:])
    assert (out[300 + fade : 500 - fade] == 9.0).all()
    # the fade-in starts from the original that continued (sample 300), the fade-out ends in what leads to 600
    w = 1 / (fade + 1)
    assert out[300] == pytest.approx(w * 9.0 + (1 - w) * original[300])
    assert out[499] == pytest.approx(w * 9.0 + (1 - w) * original[599])


def test_edit_on_the_shipped_bundle_changes_the_word_and_nothing_else(demo_pipeline):
    from model import recognizer

    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    old = voice.text  # "It's always sad when the fleas leave, because that means your dog is dead."
    new = old.replace(" sad ", " purple ")
    original = (voice.wav * 32767).round().astype(np.int16)  # a 16-bit recording, as uploads are
    for sr in (16000, 24000):
        wav = original if sr == 16000 else (pipe_resample(voice.wav, sr) * 32767).round().astype(np.int16)
        out, out_sr = pipe.edit(wav, sr, new, old, seed=3)
        assert out_sr == sr and out.dtype == np.float32
        ref = wav.astype(np.float32) / 32768
        # every sample before the first regenerated frame and after the last one is the upload's own
        head = np.flatnonzero(out[: len(ref)] != ref[: len(out)])[0]
        tail = np.flatnonzero(out[::-1][: len(ref)] != ref[::-1][: len(out)])[0]
        assert head > 0.3 * sr and tail > 2.0 * sr, (head, tail)
        # "purple" is longer than "sad": the recording grows by about the difference, and only the word's
        # stretch (its phones and the margins) differs
        assert 0.0 < (len(out) - len(ref)) / sr < 0.5
        assert (len(out) - head - tail) / sr < 0.9 + 2 * MARGIN_S
    if recognizer.available():
        heard = recognizer.transcribe(out, out_sr).split()
        assert "purple" in heard and "sad" not in heard, heard


def pipe_resample(wav, sr):
    from model.audio import resample

    return resample(wav, 16000, sr)


@pytest.mark.parametrize("transcript,text,param,match", [
    ("It's always sad when the fleas leave, because that means your dog is dead.",
     "It's always sad when the fleas leave, because that means your dog is dead!", "text", "nothing to edit"),
    ("Hi.", "Hello.", "transcript", "does not match the audio"),
    ("It's always sad when the fleas leave, because that means your dog is dead.", "  ", "text", "text is empty"),
    ("It's always sad when the fleas leave, because that means your dog is dead.",
     "It's always sad when " + "many more words " * 20 + "the fleas leave.", "text", "at most"),
])
def test_edit_errors_name_the_parameter(demo_pipeline, transcript, text, param, match):
    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    with pytest.raises(SettingError, match=match) as e:
        pipe.edit(voice.wav, 16000, text, transcript)
    assert e.value.param == param


def test_edit_from_the_command_line(demo_pipeline, tmp_path, capsys):
    import soundfile as sf

    from speechflow.cli import main

    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    sf.write(tmp_path / "take.wav", voice.wav, 16000, subtype="PCM_16")
    take, _ = sf.read(tmp_path / "take.wav", dtype="float32")
    args = ["edit", str(tmp_path / "take.wav"), str(tmp_path / "fixed.wav"), "--transcript", voice.text,
            "--bundle", str(DEMO_BUNDLE), "--device", "cpu", "--seed", "2"]
    assert main([*args, "--from", "your dog", "--to", "my cat"]) == 0, capsys.readouterr().err
    assert "that means my cat is dead." in capsys.readouterr().out
    fixed, sr = sf.read(tmp_path / "fixed.wav", dtype="float32")
    offline, _ = pipe.edit(take, 16000, voice.text.replace("your dog", "my cat"), voice.text, seed=2)
    assert sr == 16000 and np.abs(fixed - offline).max() <= 1 / 32768  # as 16-bit samples
    assert main([*args, "--from", "zebra", "--to", "cat"]) == 2
    assert "no words 'zebra' to replace" in capsys.readouterr().err
    assert main([*args, "--to", "cat"]) == 2
    assert "--from OLD --to NEW" in capsys.readouterr().err


def test_a_span_given_a_text_says_it_there_and_nothing_else_changes(demo_pipeline):
    from model import recognizer
    from model.editing import span_change

    # the phones centred in the span give way, whatever words they belong to; an empty span inserts at a boundary
    words = [("purple", 1, 4)]
    assert span_change(np.array([10, 10, 10, 10]), (8, 31), words, "purple").old == (1, 3)
    assert span_change(np.array([10, 10, 10, 10]), (19, 21), words, "purple").old == (2, 2)
    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    out, sr = pipe.edit(voice.wav, 16000, "purple elephants", voice.text, span=(1.0, 1.4), seed=1)
    first = np.flatnonzero(out[: len(voice.wav)] != voice.wav[: len(out)])[0]
    last = np.flatnonzero(out[::-1][: len(voice.wav)] != voice.wav[::-1][: len(out)])[0]
    # "purple elephants" is longer than what it replaces: the regenerated stretch ends later in the output, and
    # the original's last 3.5 s follow it untouched
    assert 0.7 * sr < first < 1.1 * sr and len(out) - last < 2.5 * sr and last > 3.5 * sr, (first, last)
    if recognizer.available():
        assert "purple elephants" in recognizer.transcribe(out, sr)


def test_rows_see_each_regenerated_stretch_with_its_context_not_the_whole_recording():
    from model.editing import row_windows

    generate = np.zeros(6000, dtype=bool)  # a minute of frames
    generate[1000:1050] = generate[1300:1320] = generate[5000:5100] = True
    layout = Layout(np.arange(6000), generate)
    # the first two stretches are 250 frames apart, closer than two contexts: one row; the third has its own
    assert row_windows(layout, 400) == [(600, 1720), (4600, 5500)]
    assert row_windows(layout, 100) == [(900, 1150), (1200, 1420), (4900, 5200)]
    generate[:] = False
    generate[:10] = True  # at the very start: clipped to the recording
    assert row_windows(Layout(np.arange(6000), generate), 400) == [(0, 410)]


def test_an_edit_in_a_long_recording_costs_the_edit_not_the_recording(demo_pipeline):
    from model.defaults import sampling
    from model.editing import CONTEXT_S

    pipe, _ = demo_pipeline
    voices = list(pipe.voices.values())[:4]
    wav = np.concatenate([v.wav for v in voices])  # about 20 s, four speakers' sentences
    transcript = " ".join(v.text for v in voices)
    text = transcript.replace(" sad ", " purple ")
    plan = pipe.plan_edit(wav, 16000, text, transcript, sampling=sampling("tts"), seed=0)
    [row] = plan.rows
    assert row.frames <= 100 * (2 * CONTEXT_S + 1.0) < len(wav) / 160


def test_spans_and_spread_out_edits_are_bounded_and_named(demo_pipeline):
    from model.defaults import sampling
    from model.infilling import InfillRequest

    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    for span in ((0.0, float("inf")), (1e300, 1e301), (100.0, 101.0), (float("nan"), 1.0)):
        with pytest.raises(SettingError, match="span") as e:
            pipe.plan_edit(voice.wav, 16000, "purple", voice.text, sampling=sampling("tts"), seed=0, span=span)
        assert e.value.param == "spans"
    # many tiny spans mark more frames than their summed length says: the marked frames count
    noise = np.random.default_rng(0).standard_normal(16000 * 14).astype(np.float32) * 0.01
    tiny = [(k * 0.02, k * 0.02 + 1e-6) for k in range(600)]
    with pytest.raises(SettingError, match="at most 10 s") as e:
        pipe.plan_infill(InfillRequest(noise, 16000, tiny), sampling=sampling("pretrain"), seed=0)
    assert e.value.param == "spans"
    # eight edits 5 s apart in a 43 s recording: every one needs its context, 30 s of rows at most
    long = np.tile(voice.wav, 8)
    said = " ".join([voice.text] * 8)
    edited = " ".join([voice.text.replace(" sad ", " purple ")] * 8)
    with pytest.raises(SettingError, match="edit fewer places at a time") as e:
        pipe.plan_edit(long, 16000, edited, said, sampling=sampling("tts"), seed=0)
    assert e.value.param == "text"


def test_silence_around_a_recording_does_not_count_against_its_transcript(demo_pipeline):
    from model.defaults import sampling

    pipe, _ = demo_pipeline
    voice = pipe.voices["espeak-en-029-Mike"]
    padded = np.concatenate([np.zeros(16000 * 3, np.float32), voice.wav, np.zeros(16000 * 6, np.float32)])
    plan = pipe.plan_edit(padded, 16000, voice.text.replace(" sad ", " purple "), voice.text,
                          sampling=sampling("tts"), seed=0)
    assert len(plan.rows) == 1
