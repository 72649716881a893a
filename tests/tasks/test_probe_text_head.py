"""KE2NT's text-embedding emotion head (``run.probe.head: text_embedding``): its three losses
against hand-computed values, learning planted classes (and not shuffled ones), its settings'
errors, and runs under LAVIS's runner on the features the linear head uses."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import lavis_ext  # noqa: F401  (registers the tasks, applies the compat fixes first)
from lavis.common.registry import registry
from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.synthetic import make_synthetic
from lavis_ext.entry import train_main
from lavis_ext.tasks.probe import ProbeTask
from lavis_ext.tasks.probe.text_head import (TEMPLATE, TextEmbeddingHead, TextHeadConfig,
                                             ZeroShotHead, build_head, class_prompt,
                                             cosine_logits, itc_image_features, loss_c, loss_s,
                                             loss_t, text_embeddings)
from test_probe_runner import EMOTIONS, NAME, PlantedEncoder, PlantedSet, run_probe


def test_prompts_follow_ke2nt_with_an_for_anger():
    assert class_prompt("happiness") == \
        "a photo of a person making a happiness facial expression."
    assert class_prompt("anger") == "a photo of a person making an anger facial expression."
    cfg = TextHeadConfig.parse({"prompts": {"neutral": "calm", "anger": "angry"}})
    assert cfg.prompts_for(["anger", "neutral"]) == ["angry", "calm"]
    assert TextHeadConfig.parse(None).prompts == TEMPLATE


def test_ls_is_cross_entropy_over_scaled_cosines():
    e = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    # cos rows: [1, 0] and [1/sqrt2, 1/sqrt2]; scale 2.
    assert torch.allclose(cosine_logits(e, texts, 2.0),
                          torch.tensor([[2.0, 0.0], [math.sqrt(2), math.sqrt(2)]]))
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert loss_s(e, texts, 2.0, torch.tensor([0, 1])).item() == pytest.approx(expected)


# Classes: 0 = neutral, 1, 2. Sample 2 is neutral: left out of Lt and Lc.
TEXTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
E = torch.tensor([[2.0, 1.0], [1.0, 3.0], [5.0, 5.0]])
N = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
Y = torch.tensor([1, 2, 0])


def test_lt_aligns_unnormalised_differences_on_non_neutral_samples():
    # Sample 0: e - n = [1, 0], t1 - t0 = [-1, 1]: cos -1/sqrt2. Sample 1: [0, 2] vs [0, 1]: 1.
    expected = ((1 + 1 / math.sqrt(2)) + 0.0) / 2
    assert loss_t(E, N, TEXTS, Y, neutral=0).item() == pytest.approx(expected)
    normalised_first = loss_t(nn.functional.normalize(E, dim=-1),
                              nn.functional.normalize(N, dim=-1), TEXTS, Y, neutral=0)
    assert normalised_first.item() != pytest.approx(expected)  # the order matters
    e, n = E.clone().requires_grad_(), N.clone().requires_grad_()
    for loss in (loss_t, loss_c):
        zero = loss(e, n, TEXTS, torch.tensor([0, 0, 0]), neutral=0)
        zero.backward()  # an all-neutral batch: 0, with e and n still in the graph (DDP)
        assert zero.item() == 0.0 and e.grad is not None and n.grad is not None


def test_lc_averages_over_all_anchor_sample_pairs():
    s2, s5, s10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
    # Anchors t1 = [0, 1], t2 / |t2|; positives e0 / |e0|, e1 / |e1|; negatives both [1, 1]/s2.
    anchor_neg = (1 / s2 + 1 / s2 + 1.0 + 1.0) / 4
    anchor_pos = (1 / s5 + 3 / s10 + 3 / s10 + 2 / s5) / 4
    expected = anchor_neg - anchor_pos + 2.0
    assert loss_c(E, N, TEXTS, Y, neutral=0).item() == pytest.approx(expected)
    own_pairs_only = ((1 / s2 - 1 / s5) + (1.0 - 2 / s5)) / 2 + 2.0
    assert expected != pytest.approx(own_pairs_only)
    # Without a neutral class every sample counts.
    everyone = loss_c(E, N, TEXTS, Y, neutral=None).item()
    assert everyone != pytest.approx(expected)


def test_head_loss_is_the_weighted_sum_of_its_parts():
    torch.manual_seed(0)
    head = TextEmbeddingHead(5, torch.randn(3, 4), scale=10.0, neutral=0,
                             loss_weights={"ls": 1.0, "lt": 0.5, "lc": 2.0})
    out = head.losses(torch.randn(6, 5), torch.tensor([0, 1, 2, 1, 2, 0]))
    total = out["loss_s"] + 0.5 * out["loss_t"] + 2.0 * out["loss_c"]
    assert out["loss"].item() == pytest.approx(total.item())
    assert out["logits"].shape == (6, 3) and not head.log_scale.requires_grad
    assert head.scale.item() == pytest.approx(10.0)
    learned = TextEmbeddingHead(5, torch.randn(3, 4), learn_scale=True, neutral=0)
    assert learned.log_scale.requires_grad and learned.scale.item() == pytest.approx(100.0)
    with torch.no_grad():
        learned.log_scale += 1.0  # learned past CLIP's cap of 100: capped, as CLIP does
    assert learned.scale.item() == pytest.approx(100.0)
    only_s = TextEmbeddingHead(5, torch.randn(3, 4), loss_weights={"lt": 0, "lc": 0})
    only_s.losses(torch.randn(4, 5), torch.tensor([0, 1, 2, 1]))["loss"].backward()
    assert all(p.grad is not None for p in only_s.to_neutral.parameters())  # DDP-safe


def _planted(split: str, seed: int, shuffle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    data = PlantedSet(split, seed, shuffle)
    rows = [(i, EMOTIONS.index(r["emotions"][0])) for i, r in enumerate(data.annotation)
            if r["emotions"]]
    return data.x[[i for i, _ in rows]], torch.tensor([y for _, y in rows])


def _train_and_score(shuffle: bool) -> float:
    torch.manual_seed(0)
    x, y = _planted("train", 0, shuffle)
    x_test, y_test = _planted("test", 1)
    texts = torch.randn(len(EMOTIONS), 12, generator=torch.Generator().manual_seed(3))
    norm = nn.BatchNorm1d(x.shape[1], affine=False)
    head = TextEmbeddingHead(x.shape[1], texts, scale=30.0, neutral=EMOTIONS.index("neutral"))
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.01, weight_decay=0.0)
    for step in range(150):
        batch = torch.randperm(len(x))[:32]
        loss = head.losses(norm(x[batch]), y[batch])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    norm.eval(), head.eval()
    with torch.no_grad():
        return (head(norm(x_test)).argmax(1) == y_test).float().mean().item()


def test_head_learns_planted_classes_and_not_shuffled_ones():
    assert _train_and_score(shuffle=False) >= 0.9
    assert _train_and_score(shuffle=True) <= 0.45  # chance: 0.25


class CountingEncoder:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        g = torch.Generator().manual_seed(len(texts))
        return nn.functional.normalize(torch.randn(len(texts), 6, generator=g), dim=-1).numpy()


def test_text_embeddings_are_encoded_once_and_cached(tmp_path):
    cfg = TextHeadConfig.parse({"encoder": "minilm"})
    encoder = CountingEncoder()
    first = text_embeddings(cfg, ["neutral", "anger"], tmp_path, encoder)
    again = text_embeddings(cfg, ["neutral", "anger"], tmp_path, encoder)
    assert encoder.calls == 1 and torch.equal(first, again)
    text_embeddings(cfg, ["neutral", "fear"], tmp_path, encoder)  # other prompts: another file
    assert encoder.calls == 2 and len(list(tmp_path.glob("text_embeddings_*.pt"))) == 2
    head = build_head(cfg, 8, ["anger", "neutral"], tmp_path, encoder)
    assert head.neutral == 1 and head.text_embeddings.shape == (2, 6)


def test_the_real_minilm_gives_one_unit_row_per_class(tmp_path):
    texts = text_embeddings(TextHeadConfig.parse({}), list(EMOTIONS), tmp_path)
    assert texts.shape == (4, 384)
    assert torch.allclose(texts.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("probe, match", [
    ({"target": "au", "head": "text_embedding"}, r"run.probe.head.*target: emotion"),
    ({"target": "emotion", "head": "clip"}, r"run.probe.head must be one of"),
    ({"target": "emotion", "text_head": {}}, r"run.probe.text_head is set but.*'linear'"),
    ({"target": "emotion", "head": "text_embedding", "text_head": {"temperature": 1}},
     r"run.probe.text_head: unknown key\(s\) \['temperature'\]"),
    ({"target": "emotion", "head": "text_embedding", "text_head": {"encoder": "clip"}},
     r"run.probe.text_head.encoder must be one of"),
    ({"target": "emotion", "head": "text_embedding", "text_head": {"zero_shot": True}},
     r"run.probe.text_head.zero_shot: .*only encoder 'qformer_text'"),
    ({"target": "emotion", "head": "text_embedding", "source": "vision",
      "text_head": {"encoder": "qformer_text", "zero_shot": True}},
     r"run.probe.text_head.zero_shot .*source: qformer"),
    ({"target": "emotion", "head": "text_embedding", "text_head": {"scale": 0}},
     r"run.probe.text_head.scale must be a positive number"),
    ({"target": "emotion", "head": "text_embedding", "text_head": {"prompts": "a face"}},
     r"run.probe.text_head.prompts: a template must contain"),
    ({"target": "emotion", "head": "text_embedding",
      "text_head": {"loss_weights": {"ls": 1, "lx": 1}}}, r"run.probe.text_head.loss_weights"),
    ({"target": "emotion", "head": "text_embedding",
      "text_head": {"loss_weights": {"ls": 0}}}, r"run.probe.text_head.loss_weights.ls"),
])
def test_bad_text_head_settings_name_the_field(probe, match):
    with pytest.raises(ValueError, match=match):
        ProbeTask(**probe)


def test_class_dependent_settings_are_checked_when_the_classes_are_known(tmp_path):
    cfg = TextHeadConfig.parse({"prompts": {"anger": "angry"}})
    with pytest.raises(ValueError, match=r"prompts has no text for the probed class\(es\) "
                                         r"\['neutral'\]"):
        build_head(cfg, 4, ["anger", "neutral"], tmp_path, CountingEncoder())
    with pytest.raises(ValueError, match=r"loss_weights.lt > 0 needs the neutral class"):
        build_head(TextHeadConfig.parse({}), 4, ["anger", "fear"], tmp_path, CountingEncoder())
    head = build_head(TextHeadConfig.parse({"loss_weights": {"lt": 0}}), 4, ["anger", "fear"],
                      tmp_path, CountingEncoder())
    assert head.neutral is None


TEXT_PROBE = {"target": "emotion", "source": "qformer", "mode": "linear",
              "head": "text_embedding", "text_head": {"encoder": "minilm", "scale": 30.0}}


def test_text_head_runs_under_the_runner_on_the_linear_heads_features(tmp_path, plain_process):
    """The linear and the text head with one cache_dir: the second run encodes no image again
    and fills its own row of the same table; shuffled labels teach it nothing."""
    cache, tables = str(tmp_path / "cache"), str(tmp_path / "tables")
    linear = {"target": "emotion", "source": "qformer", "mode": "linear", "row_name": "linear",
              "cache_dir": cache, "table_dir": tables}
    run_probe(tmp_path / "linear", linear, max_epoch=1)
    PlantedEncoder.images_encoded = 0
    text = dict(TEXT_PROBE, row_name="text head", cache_dir=cache, table_dir=tables)
    scores = run_probe(tmp_path / "text", text)
    assert PlantedEncoder.images_encoded == 2  # only the head-sizing call: features cached
    assert scores["accuracy"] >= 0.9 and scores["head"] == "text_embedding", scores
    assert scores["n_scored"] == 94
    assert len(list((tmp_path / "cache").glob("text_embeddings_minilm_*.pt"))) == 1
    table = (tmp_path / "tables" / f"probe_emotion_{NAME}_test.md").read_text()
    assert "| linear |" in table and "| text head |" in table
    shuffled = run_probe(tmp_path / "shuffled", dict(TEXT_PROBE, row_name="shuffled"),
                         shuffle=True)
    assert shuffled["accuracy"] <= 0.45, shuffled


# --- the configs in projects/probe_text --------------------------------------------------
PROJECTS = Path(__file__).resolve().parents[2] / "projects"
TEXT_CONFIGS = PROJECTS / "probe_text"
# Each text-head config and the linear row whose features it reads.
LINEAR_OF = {"table3_affectnet_qformer_exp_text.yaml": PROJECTS / "probe" /
             "table3_affectnet_qformer_exp.yaml",
             "table3_affectnet_vitg_text.yaml": PROJECTS / "probe" / "table3_affectnet_vitg.yaml",
             "rafdb_qformer_exp_text.yaml": TEXT_CONFIGS / "rafdb_qformer_exp.yaml"}
ZERO_SHOT = TEXT_CONFIGS / "rafdb_qformer_stage1_zeroshot.yaml"


def test_the_zero_shot_config_scores_a_stage1_checkpoint_without_training():
    cfg = OmegaConf.load(ZERO_SHOT)
    linear = OmegaConf.load(TEXT_CONFIGS / "rafdb_qformer_exp.yaml")
    assert cfg.run.evaluate is True and cfg.model.load_finetuned is True
    assert cfg.run.probe.text_head.encoder == "qformer_text" and cfg.run.probe.text_head.zero_shot
    assert cfg.datasets == linear.datasets and cfg.run.probe.emotions == linear.run.probe.emotions
    assert cfg.run.probe.table_dir == linear.run.probe.table_dir
    assert "output/exp_blip/stage1/<job id>/checkpoint_9.pth" in ZERO_SHOT.read_text()
    stage1 = OmegaConf.load(PROJECTS / "exp_blip" / "stage1.yaml").run
    assert stage1.max_epoch == 10  # hence checkpoint_9.pth


def test_the_text_head_configs_are_all_there():
    assert {p.name for p in TEXT_CONFIGS.glob("*.yaml")} == set(LINEAR_OF) | \
        {"rafdb_qformer_exp.yaml", ZERO_SHOT.name}


@pytest.mark.parametrize("name", sorted(LINEAR_OF))
def test_text_configs_differ_from_their_linear_row_only_in_the_head(name):
    text = OmegaConf.to_container(OmegaConf.load(TEXT_CONFIGS / name))
    linear = OmegaConf.to_container(OmegaConf.load(LINEAR_OF[name]))
    probe = text["run"]["probe"]
    assert probe.pop("head") == "text_embedding" and "head" not in linear["run"]["probe"]
    TextHeadConfig.parse(probe["text_head"])  # valid as written
    assert probe.pop("text_head")["loss_weights"] == {"ls": 1.0, "lt": 1.0, "lc": 1.0}
    assert probe.pop("row_name") == f"{linear['run']['probe'].pop('row_name')}, text head"
    assert text["run"].pop("output_dir") != linear["run"].pop("output_dir")
    assert text == linear  # same model, data, source, cache_dir, table_dir, schedule
    assert "expblip prepare" in (TEXT_CONFIGS / name).read_text()


@pytest.mark.parametrize("path", sorted(TEXT_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_text_config_parts_are_registered(path):
    cfg = OmegaConf.load(path)
    assert registry.get_model_class(cfg.model.arch) is not None
    assert registry.get_task_class(cfg.run.task) is not None
    assert registry.get_lr_scheduler_class(cfg.run.lr_sched) is not None
    for name in cfg.datasets:
        assert registry.get_builder_class(name) is not None
    probe = OmegaConf.to_container(cfg.run.probe)
    ProbeTask(**probe)  # every run.probe key is valid


@pytest.fixture(scope="module")
def emotion_data(tmp_path_factory):
    """Small native-layout AffectNet and RAF-DB (basic), prepared as the configs say."""
    root = tmp_path_factory.mktemp("probe_text_data")
    make_synthetic("affectnet", root / "affectnet", 64, seed=0, image_size=112)
    prepare_dataset("affectnet", root / "affectnet", root / "prepared_affectnet")
    make_synthetic("rafdb", root / "rafdb", 64, seed=0, image_size=112, variant="basic")
    prepare_dataset("rafdb", root / "rafdb", root / "prepared_rafdb", subset="basic")
    return {"affectnet_emotion": (root / "affectnet", root / "prepared_affectnet"),
            "rafdb_emotion": (root / "rafdb", root / "prepared_rafdb")}


def run_tiny(path: Path, data: dict, tmp_path: Path, job: str, *extra: str,
             finetuned: bool = False) -> dict:
    """One epoch of ``path`` on the tiny model type and synthetic data; the test scores.

    ``finetuned``: ``extra`` names a checkpoint in ``model.finetuned`` to load."""
    cfg = OmegaConf.load(path)
    (name,) = list(cfg.datasets)
    images, prepared = data[name]
    tiny = cfg.copy()
    tiny.model = {"arch": cfg.model.arch, "model_type": "tiny"}
    copy = tmp_path / path.name
    copy.write_text(OmegaConf.to_yaml(tiny))
    d = f"datasets.{name}"
    options = [
        f"model.load_finetuned={finetuned}", "model.load_pretrained=False",
        f"{d}.build_info.annotations.train.storage={prepared / 'train.json'}",
        f"{d}.build_info.annotations.test.storage={prepared / 'test.json'}",
        f"{d}.build_info.images.storage={images}",
        f"{d}.vis_processor.train.image_size=112", f"{d}.vis_processor.eval.image_size=112",
        "run.max_epoch=1", "run.batch_size_train=8", "run.batch_size_eval=16",
        "run.num_workers=0", "run.device=cpu", "run.amp=False",
        f"run.output_dir={tmp_path / job}", f"run.probe.table_dir={tmp_path / 'tables'}",
        f"run.probe.cache_dir={tmp_path / 'cache'}"]
    assert train_main(["--cfg-path", str(copy), "--options", *options, *extra]) == 0
    (folder,) = [p for p in (tmp_path / job).iterdir() if p.is_dir()]
    return json.loads((folder / "result" / "probe_test_epoch0_scores.json").read_text())


@pytest.mark.parametrize("name", ["table3_affectnet_qformer_exp_text.yaml",
                                  "table3_affectnet_vitg_text.yaml",
                                  "rafdb_qformer_exp_text.yaml"])
def test_linear_then_text_config_share_the_features_on_tiny_models(name, emotion_data,
                                                                   tmp_path, plain_process):
    linear = run_tiny(LINEAR_OF[name], emotion_data, tmp_path, "linear")
    features = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(features) == 2  # train and test
    text = run_tiny(TEXT_CONFIGS / name, emotion_data, tmp_path, "text")
    cached = sorted((tmp_path / "cache").glob("*.pt"))
    assert [p for p in cached if not p.name.startswith("text_embeddings_")] == features
    assert len(cached) == 3  # the same features, plus the prompts' embeddings
    assert text["head"] == "text_embedding" and linear["head"] == "linear"
    assert text["classes"] == linear["classes"] and text["n_scored"] == linear["n_scored"] > 0
    dataset = list(OmegaConf.load(LINEAR_OF[name]).datasets)[0]
    table = (tmp_path / "tables" / f"probe_emotion_{dataset}_test.md").read_text()
    assert f"| {linear['row']} |" in table and f"| {text['row']} |" in table


# --- the Q-Former's own text branch (stage-1 checkpoints) and zero-shot ------------------
def _tiny_qformer():
    cls = registry.get_model_class("exp_blip_qformer")
    cfg = OmegaConf.merge(OmegaConf.load(cls.default_config_path("tiny")).model,
                          {"load_finetuned": False, "load_pretrained": False})
    return cls.from_config(cfg)


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    """A tiny stage-1 checkpoint (random weights) as the runner saves it: {"model": ...}."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage1") / "checkpoint_0.pth"
    torch.save({"model": _tiny_qformer().state_dict()}, path)
    return path


def test_zero_shot_head_takes_the_best_query_over_temp():
    texts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    queries = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])  # one image, two unit queries
    logits = ZeroShotHead(texts, temp=0.5)(queries.flatten(1))
    assert torch.allclose(logits, torch.tensor([[1.0 / 0.5, 0.8 / 0.5]]))


def test_qformer_text_refuses_a_model_without_a_stage1_checkpoint(stage1_checkpoint):
    cfg = TextHeadConfig.parse({"encoder": "qformer_text"})
    model = _tiny_qformer()
    with pytest.raises(ValueError, match=r"run.probe.text_head.encoder: 'qformer_text'.*"
                                         r"no checkpoint loaded through model.finetuned"):
        text_embeddings(cfg, ["neutral", "anger"], model=model)
    model.load_report = {"stage": 2}
    with pytest.raises(ValueError, match=r"stage-2 captioner checkpoint, which has no Q-Former "
                                         r"text branch.*Set model.finetuned to a stage-1"):
        text_embeddings(cfg, ["neutral", "anger"], model=model)
    with pytest.raises(ValueError, match=r"'qformer_text' needs a Q-Former model"):
        text_embeddings(cfg, ["neutral", "anger"], model=nn.Linear(2, 2))
    model.load_checkpoint(str(stage1_checkpoint))
    assert model.load_report["stage"] == 1
    texts = text_embeddings(cfg, ["neutral", "anger"], model=model)
    assert texts.shape == (2, model.text_proj.out_features)


def test_zero_shot_logits_are_blip2s_itc_similarity(stage1_checkpoint):
    """Against LAVIS's own Blip2Qformer.extract_features (image and text modes)."""
    model = _tiny_qformer()
    model.load_checkpoint(str(stage1_checkpoint))
    model.eval()
    prompts = [class_prompt(e) for e in EMOTIONS]
    images = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = model.extract_features({"image": images}, mode="image").image_embeds_proj
        text = model.extract_features({"text_input": prompts},
                                      mode="text").text_embeds_proj[:, 0, :]
        expected = (image @ text.t()).max(dim=1).values / model.temp
        texts = text_embeddings(TextHeadConfig.parse({"encoder": "qformer_text"}),
                                list(EMOTIONS), model=model)
        head = ZeroShotHead(texts, temp=float(model.temp))
        got = head(itc_image_features(model, images))
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)


@pytest.mark.parametrize("zero_shot", [False, True])
def test_qformer_text_runs_under_the_runner_from_a_stage1_checkpoint(
        zero_shot, stage1_checkpoint, emotion_data, tmp_path, plain_process):
    """Trained on the Q-Former's text embeddings, or the zero-shot config as it is."""
    extra = [f"model.finetuned={stage1_checkpoint}"]
    if not zero_shot:
        extra.append("run.probe.text_head.encoder=qformer_text")
    path = ZERO_SHOT if zero_shot else TEXT_CONFIGS / "rafdb_qformer_exp_text.yaml"
    scores = run_tiny(path, emotion_data, tmp_path, "job", *extra, finetuned=True)
    assert scores["head"] == ("zero_shot" if zero_shot else "text_embedding")
    assert scores["n_scored"] > 0 and 0.0 <= scores["accuracy"] <= 1.0
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    assert sum(n.startswith("text_embeddings_qformer_text_") for n in cached) == 1
    if zero_shot:  # nothing trained: only the test images encoded, as ITC query projections
        assert [n for n in cached if not n.startswith("text_")] == \
            [n for n in cached if n.startswith("rafdb_emotion_test_qformer-itc_")]
        assert len(cached) == 2
    table = (tmp_path / "tables" / "probe_emotion_rafdb_emotion_test.md").read_text()
    assert f"| {scores['row']} |" in table


def test_zero_shot_without_evaluate_is_refused(stage1_checkpoint, emotion_data, tmp_path,
                                               plain_process):
    with pytest.raises(ValueError, match=r"zero_shot trains nothing: set run.evaluate: True"):
        run_tiny(ZERO_SHOT, emotion_data, tmp_path, "job", f"model.finetuned={stage1_checkpoint}",
                 "run.evaluate=False", finetuned=True)


def test_text_head_fine_tunes_the_encoder_through_the_runner(tmp_path, plain_process):
    probe = dict(TEXT_PROBE, mode="finetune", row_name="ft text head")
    scores = run_probe(tmp_path, probe, init_lr=0.01, warmup_lr=0.01)
    assert scores["accuracy"] >= 0.9 and scores["mode"] == "finetune", scores
    job = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    saved = torch.load(sorted(job.glob("checkpoint_*.pth"))[-1], map_location="cpu",
                       weights_only=True)["model"]
    assert not torch.equal(saved["encoder.proj.weight"], torch.eye(16))  # the encoder moved
    assert "head.project.0.weight" in saved and "head.to_neutral.0.weight" in saved
    assert saved["head.text_embeddings"].shape == (4, 384)


@pytest.mark.slow
def test_text_head_trains_on_two_ranks(tmp_path):
    """Under DDP every head parameter must take part in every step (Lt, Lc, the MLP)."""
    import os
    import subprocess
    import sys

    import test_probe_runner

    cfg = test_probe_runner.write_config(tmp_path, dict(TEXT_PROBE, row_name="ddp"), max_epoch=4)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LAVIS_EXT_DIST_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(test_probe_runner.REPO_ROOT),
                                         env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         test_probe_runner.__file__, "--cfg-path", str(cfg)],
        capture_output=True, text=True, env=env, cwd=test_probe_runner.REPO_ROOT, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "6 iters per inner epoch" in log, log[-4000:]  # each rank half the 191 features
    scores = test_probe_runner.test_scores(tmp_path)
    assert scores["accuracy"] >= 0.9 and scores["head"] == "text_embedding", scores
