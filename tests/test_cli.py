import json
import subprocess
import sys
import warnings

import numpy as np
import soundfile as sf

from model.pipeline import SpeechFlowPipeline
from speechflow.cli import main
from tests.conftest import speechlike


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "speechflow.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("corpus", "pretrain", "infill", "bundle", "demo"):
        assert command in out.stdout


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechflow pretrain: error: manifest not found") and "Traceback" not in err
    assert main(["infill", "in.wav", "out.wav", "--span", "1:2", "--bundle", str(tmp_path)]) == 2
    assert "neither a bundle" in capsys.readouterr().err


def test_bundle_then_infill_from_the_command_line(debug_model, tmp_path, capsys):
    debug_model.save_pretrained(tmp_path / "run")
    assert main(["bundle", "--out", str(tmp_path / "bundle"), "--pretrain", str(tmp_path / "run"),
                 "--recipe", "speechflow pretrain ..."]) == 0
    info = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert info["tasks"] == ["pretrain"] and info["dtype"] == "float16" and info["recipe"] == "speechflow pretrain ..."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert SpeechFlowPipeline.from_pretrained(tmp_path / "bundle", device="cpu").tasks == ["pretrain"]

    sf.write(tmp_path / "in.wav", speechlike(1.2, seed=1, sr=22050), 22050)
    code = main(["infill", str(tmp_path / "in.wav"), str(tmp_path / "out.flac"), "--span", "0.3:0.6",
                 "--bundle", str(tmp_path / "bundle"), "--nfe", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    out, sr = sf.read(tmp_path / "out.flac")
    assert sr == 22050 and len(out) == int(1.2 * 22050) and np.isfinite(out).all()  # the input's own rate
    assert main(["infill", str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--span", "x",
                 "--bundle", str(tmp_path / "bundle")]) == 2


def test_demo_infills_a_generated_example(debug_model, tmp_path, capsys):
    """The README's main job until the server lands (needs espeak-ng, which `make` installs)."""
    from model.bundle import write_bundle

    debug_model.save_pretrained(tmp_path / "run")
    write_bundle(tmp_path / "bundle", {"pretrain": tmp_path / "run"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["demo", "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "demo"), "--nfe", "2",
                     "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    example, sr = sf.read(tmp_path / "demo" / "example.wav")
    infilled, sr2 = sf.read(tmp_path / "demo" / "infilled.wav")
    assert sr == sr2 == 16000 and example.shape == infilled.shape and len(example) > sr
    assert not np.allclose(example, infilled)


def test_vocoder_training_and_bundling_from_the_command_line(debug_model, tiny_corpus, tmp_path, capsys):
    from model.vocos import VocosVocoder

    assert main(["vocoder", "--data", str(tiny_corpus), "--out", str(tmp_path / "voc"), "--steps", "2",
                 "--precision", "fp32", "--num-workers", "0", "--device", "cpu", "--batch-seconds", "2"]) == 0
    debug_model.save_pretrained(tmp_path / "run")
    assert main(["bundle", "--out", str(tmp_path / "b"), "--pretrain", str(tmp_path / "run"),
                 "--vocoder", str(tmp_path / "voc")]) == 0
    info = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert info["tasks"] == ["pretrain"] and info["models"]["vocoder"]["dir"] == "vocoder"
    pipe = SpeechFlowPipeline.from_pretrained(tmp_path / "b", device="cpu")
    assert isinstance(pipe.vocoder, VocosVocoder) and pipe.vocoder_name == "vocos"
    out, _ = pipe.infill(speechlike(1.0, seed=0), 16000, [(0.2, 0.5)], steps=2)
    assert out.shape == (16000,) and np.isfinite(out).all()


def test_evaluate_from_the_command_line(debug_model, tiny_corpus, tmp_path, capsys):
    from model.bundle import write_bundle

    debug_model.save_pretrained(tmp_path / "enh")
    write_bundle(tmp_path / "b", {"enhance": tmp_path / "enh"})
    code = main(["evaluate", "--task", "enhance", "--bundle", str(tmp_path / "b"), "--data", str(tiny_corpus),
                 "--n", "2", "--nfe", "2", "--ensemble", "2", "--device", "cpu", "--no-dnsmos", "--json",
                 str(tmp_path / "r.json"), "--report", str(tmp_path / "r.md")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results["overall"]) >= {"input", "ours", "spectral_gating"}
    assert results["config"]["ensemble"] == 2 and results["config"]["steps"] == 2  # what ran is on record
    assert "| SpeechFlow (ours) |" in (tmp_path / "r.md").read_text()
    sf.write(tmp_path / "noisy.wav", speechlike(0.5, seed=1), 16000)
    assert main(["enhance", str(tmp_path / "noisy.wav"), str(tmp_path / "out.wav"), "--bundle", str(tmp_path / "b"),
                 "--ensemble", "17"]) == 2
    assert "ensemble must be between 1 and 16, got 17" in capsys.readouterr().err


def test_evaluate_a_vocoder_run_by_copy_synthesis(debug_model, tiny_corpus, tmp_path, capsys):
    from model.bundle import write_bundle
    from model.vocos import VocosConfig, VocosVocoder

    debug_model.save_pretrained(tmp_path / "enh")
    write_bundle(tmp_path / "b", {"enhance": tmp_path / "enh"})  # no vocoder/: the bundle alone has Griffin-Lim
    VocosVocoder(VocosConfig(dim=32, intermediate_dim=64, layers=2)).save_pretrained(tmp_path / "voc")
    code = main(["evaluate", "--task", "vocoder", "--bundle", str(tmp_path / "b"), "--vocoder", str(tmp_path / "voc"),
                 "--data", str(tiny_corpus), "--n", "2", "--device", "cpu", "--no-dnsmos",
                 "--json", str(tmp_path / "v.json")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "v.json").read_text())
    assert list(results["overall"]) == ["recording", "vocoder", "griffin_lim"] and results["n"] == 2
    assert results["config"]["vocoder"] == str(tmp_path / "voc")
    assert results["overall"]["griffin_lim"]["pesq_wb"] > results["overall"]["vocoder"]["pesq_wb"]  # untrained


def test_a_resumed_run_keeps_its_own_schedule(tiny_corpus, tmp_path, capsys):
    """--resume continues the run's saved learning rate and warm-up (not the command's defaults); a flag given on
    resuming (here --steps, to extend it) still wins."""
    run = tmp_path / "run"
    common = ["--data", str(tiny_corpus), "--out", str(run), "--preset", "debug", "--precision", "fp32",
              "--num-workers", "0", "--device", "cpu", "--batch-seconds", "2", "--max-seconds", "1"]
    assert main(["pretrain", *common, "--steps", "2", "--lr", "3e-5", "--warmup", "7", "--save-every", "2"]) == 0
    assert main(["pretrain", *common, "--resume", "--steps", "3"]) == 0, capsys.readouterr().err
    training = json.loads((run / "config.json").read_text())["extra"]["training"]
    assert training["step"] == 3
    assert (training["config"]["lr"], training["config"]["warmup"], training["config"]["steps"]) == (3e-5, 7, 3)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["lr"] == 3e-5 * 3 / 7  # step 2 of the same warm-up: lr * (step + 1) / warmup
