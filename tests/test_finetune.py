import json

import numpy as np
import torch
from lhotse import CutSet

from model.modeling import SpeechFlowModel
from tests.test_training import to_cuts
from training.data.loading import collate_waveforms
from training.data.manifest import open_cuts
from training.tasks.enhance_separate import MixtureDataset, NoisyCropDataset, SeparateObjective
from training.trainers.finetune import finetune, init_from_pretrained
from training.trainers.trainer import TrainConfig

FAST = dict(lr=3e-3, warmup=5, batch_seconds=4.0, max_seconds=1.0, log_every=5, precision="fp32", num_workers=0,
            device="cpu")


def _with_speakers(manifest):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["speaker"] = f"spk{i % 3}"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_separation_init_tiles_the_pretrained_projections(debug_model, tmp_path):
    debug_model.save_pretrained(tmp_path / "pre")
    sep = init_from_pretrained(tmp_path / "pre", "separate")
    assert sep.config.network.x_dim == 160 and sep.config.task == "separate"
    assert sep.config.extra["init"]["fresh"] == []
    w_pre, w_sep = debug_model.net.in_proj.weight, sep.net.in_proj.weight
    torch.testing.assert_close(w_sep[:, :80], w_pre[:, :80] / 2)
    torch.testing.assert_close(w_sep[:, 160:], w_pre[:, 80:])
    torch.testing.assert_close(sep.net.out_proj.weight[80:], debug_model.net.out_proj.weight)
    torch.testing.assert_close(sep.net.layers[0].attn.qkv.weight, debug_model.net.layers[0].attn.qkv.weight)
    enh = init_from_pretrained(tmp_path / "pre", "enhance")
    assert enh.config.extra["init"]["tiled"] == [] and enh.config.extra["init"]["fresh"] == []


def test_task_datasets_make_aligned_pairs_and_mixtures(tiny_corpus):
    manifest = _with_speakers(tiny_corpus)
    cuts = list(open_cuts(manifest))
    noisy = NoisyCropDataset(manifest, max_seconds=1.0)
    item = noisy.item(cuts[3], 11)
    assert item["clean"].shape == item["noisy"].shape and not np.allclose(item["clean"], item["noisy"])
    assert np.array_equal(noisy.item(cuts[3], 11)["noisy"], item["noisy"])  # seeded
    mixes = MixtureDataset(max_seconds=1.0).items(CutSet(cuts[:4]), epoch=5)
    for m, again in zip(mixes, MixtureDataset(max_seconds=1.0).items(CutSet(cuts[:4]), epoch=5), strict=True):
        np.testing.assert_allclose(m["mix"], m["s1"] + m["s2"], atol=1e-6)
        assert len(m["mix"]) <= 16000 and np.array_equal(m["mix"], again["mix"])  # seeded by epoch and cut


def test_pit_loss_is_invariant_to_speaker_order(debug_model, tiny_corpus):
    from training.trainers.finetune import task_config

    model = SpeechFlowModel(task_config(debug_model.config, "separate"))
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.1)
    items = MixtureDataset(1.0).items(CutSet(list(open_cuts(_with_speakers(tiny_corpus)))[:3]), epoch=0)
    batch = collate_waveforms(items)
    swapped = {**batch, "s1": batch["s2"], "s2": batch["s1"]}
    objective = SeparateObjective(model.config)

    def loss(b):
        return objective(model.net, b, np.random.default_rng(0), torch.Generator().manual_seed(0))

    torch.testing.assert_close(loss(batch), loss(swapped))


def test_finetuning_enhancement_lowers_the_loss_and_resumes(debug_model, tiny_corpus, tmp_path):
    debug_model.save_pretrained(tmp_path / "pre")
    tiny_corpus = to_cuts(tiny_corpus)
    out = finetune("enhance", tmp_path / "pre", tiny_corpus, tmp_path / "enh", TrainConfig(steps=40, **FAST))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["loss"] for r in log[-2:]]) < np.mean([r["loss"] for r in log[:2]])
    model = SpeechFlowModel.from_pretrained(out)
    assert model.config.task == "enhance" and model.config.extra["init"]["pretrain_step"] is None
    finetune("enhance", tmp_path / "pre", tiny_corpus, out, TrainConfig(steps=45, **FAST), resume=True)
    assert SpeechFlowModel.from_pretrained(out).config.extra["training"]["step"] == 45


def test_a_continued_finetuning_counts_the_steps_of_the_model_it_continued(debug_model, tiny_corpus, tmp_path):
    from model.bundle import read_bundle_info, write_bundle

    debug_model.save_pretrained(tmp_path / "pre")
    cuts = to_cuts(tiny_corpus)
    first = finetune("enhance", tmp_path / "pre", cuts, tmp_path / "enh", TrainConfig(steps=4, **FAST))
    again = finetune("enhance", first, cuts, tmp_path / "enh2", TrainConfig(steps=3, **FAST))
    init = SpeechFlowModel.from_pretrained(again).config.extra["init"]
    assert init["task"] == "enhance" and init["pretrain_step"] == 4
    third = finetune("enhance", again, cuts, tmp_path / "enh3", TrainConfig(steps=2, **FAST))
    write_bundle(tmp_path / "b", {"pretrain": tmp_path / "pre", "enhance": third})
    models = read_bundle_info(tmp_path / "b")["models"]
    assert models["enhance"]["training"] == 4 + 3 + 2 and models["pretrain"]["training"] is None
    write_bundle(tmp_path / "b", {"enhance": first})  # from the pre-trained model: its own steps only
    assert read_bundle_info(tmp_path / "b")["models"]["enhance"]["training"] == 4


def test_finetuning_separation_runs(debug_model, tiny_corpus, tmp_path):
    debug_model.save_pretrained(tmp_path / "pre")
    out = finetune("separate", tmp_path / "pre", to_cuts(_with_speakers(tiny_corpus)), tmp_path / "sep",
                   TrainConfig(steps=6, **FAST))
    assert SpeechFlowModel.from_pretrained(out).config.network.x_dim == 160
