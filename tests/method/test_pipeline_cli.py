"""`expblip pipeline`: the preflight, --check, the shared step table, resumable steps."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lavis_ext.method.recipe import method_steps

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "projects" / "pipeline" / "paper.yaml"
NO_LLM = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "HF_HUB_OFFLINE": "1"}


def _expblip(*args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "lavis_ext.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **NO_LLM, **(env or {})},
                          timeout=timeout)


def test_check_of_the_paper_config_without_data_lists_every_problem_at_once(tmp_path):
    """Run from another directory: paths resolve against the project, one error, no work."""
    workdir = REPO / "runs" / "paper"
    existed = workdir.exists()
    result = _expblip("pipeline", "--config", str(PAPER), "--check", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert err.startswith("expblip pipeline: error: ") and "Traceback" not in err
    assert err.count("expblip pipeline: error:") == 1, "one error listing every problem"
    assert "nothing was started" in err
    for name in ("bp4d", "disfa", "gft", "rafau", "emotionet", "affectnet", "rafdb", "faceme"):
        assert f"{name}: prepared records not found: train.json and test.json in " \
               f"{REPO / 'data' / 'prepared' / name}" in err, name
        assert f"{name}: images root not found" in err, name
    assert "LAVIS_EXT_EVA_VIT_G" in err and "mix_blip stage 1" in err and "cat_blip stage 2" in err
    assert "no API key" in err
    assert "GPUs: pipeline.nproc_per_node is 4" in err or _gpus() >= 4
    # the plan names every step of the shared table, none done
    for step in method_steps(baselines=True):
        assert f"[left] {step.name}" in result.stdout, step.name
    assert workdir.exists() == existed, "--check starts nothing"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def _gpus():
    import torch

    return torch.cuda.device_count()


def _tiny_probe(tmp_path) -> Path:
    """Table 3's AffectNet QFormer(Exp) probe config on the tiny model and the test's faces."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "projects" / "probe" / "table3_affectnet_qformer_exp.yaml")
    cfg.model = {"arch": cfg.model.arch, "model_type": "tiny", "load_finetuned": True}
    data = cfg.datasets.affectnet_emotion
    for split in ("train", "test"):
        data.build_info.annotations[split].storage = str(tmp_path / "prepared" / "affectnet" /
                                                         f"{split}.json")
    data.build_info.images.storage = str(tmp_path / "data" / "affectnet")
    data.vis_processor.train.image_size = data.vis_processor.eval.image_size = 112
    cfg.run.merge_with({"max_epoch": 2, "batch_size_train": 16, "batch_size_eval": 16,
                        "num_workers": 0, "device": "cpu", "amp": False, "distributed": False})
    path = tmp_path / "probe_affectnet_qformer_exp.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    return path


def _config(tmp_path, server_url, n_images=12, probes=()):
    """A pipeline config beside its data, with paths relative to its own folder."""
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.synthetic.writers import make_synthetic

    for name in ("emotionet", "affectnet"):
        make_synthetic(name, tmp_path / "data" / name, n_images, seed=1, variant="csv")
        prepare_dataset(name, tmp_path / "data" / name, tmp_path / "prepared" / name)
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"pipeline": {
        "workdir": "work", "nproc_per_node": 1, "device": "cpu", "baselines": False,
        "min_free_disk_gb": 0,
        "au_datasets": {"emotionet": {"prepared": "prepared/emotionet",
                                      "images": "data/emotionet"}},
        "emotion_datasets": {"affectnet": {"prepared": "prepared/affectnet",
                                           "images": "data/affectnet"}},
        "llm": {"model": "gpt-4o-mini", "base_url": server_url}, "concurrency": 4,
        "models": {m: {"stage1": str(REPO / "projects" / m / "stage1_tiny.yaml"),
                       "stage2": str(REPO / "projects" / m / "stage2_tiny.yaml")}
                   for m in ("au_blip", "emot_blip", "exp_blip")},
        **({"probes": list(probes)} if probes else {})}}))
    return config


def test_pipeline_checks_synthesizes_and_skips_finished_steps(tmp_path):
    from support.llm_server import FaultyLLMServer

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with FaultyLLMServer() as server:
        config = _config(tmp_path, server.base_url)
        check = _expblip("pipeline", "--config", str(config), "--check", "--until",
                         "synthesize", cwd=elsewhere)
        assert check.returncode == 0, check.stderr[-3000:]
        assert "preflight: every input is in place" in check.stdout
        assert "synthesize/au-llm:" in check.stdout and " calls, about " in check.stdout
        assert server.chat_requests == 0 and not (tmp_path / "work").exists()

        first = _expblip("pipeline", "--config", str(config), "--until", "synthesize",
                         cwd=elsewhere)
        assert first.returncode == 0, first.stderr[-3000:]
        calls = server.chat_requests
        assert calls > 0
        second = _expblip("pipeline", "--config", str(config), "--until", "synthesize",
                          cwd=elsewhere)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "[done] synthesize" in second.stdout
        assert "nothing left to do up to synthesize" in second.stdout
        assert server.chat_requests == calls, "a rerun pays for nothing twice"
    records = json.loads((tmp_path / "work" / "captions" / "emotionet_train.json").read_text())
    assert all(r["captions"].get("au-rule") or not any(v == 1 for v in r["aus"].values())
               for r in records)
    assert any(r["captions"].get("au-llm") for r in records)
    emotions = json.loads((tmp_path / "work" / "captions" / "affectnet_test.json").read_text())
    assert all(r["captions"].get("emotion-rule") for r in emotions)
    assert not (elsewhere / "work").exists(), "paths resolve against the config, not the CWD"


def test_missing_records_are_an_error_not_a_skip(tmp_path):
    """The training steps' inputs are checked too: a removed images root stops the run."""
    import shutil

    from support.llm_server import FaultyLLMServer

    with FaultyLLMServer() as server:
        config = _config(tmp_path, server.base_url)
        shutil.rmtree(tmp_path / "data" / "affectnet")
        (tmp_path / "prepared" / "emotionet" / "test.json").unlink()
        result = _expblip("pipeline", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "emotionet: prepared records not found: test.json" in result.stderr
    assert f"affectnet: images root not found: {tmp_path / 'data' / 'affectnet'}" in result.stderr
    assert not (tmp_path / "work").exists()


def test_the_old_script_is_a_thin_wrapper(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "run_scripts" / "pipeline.py"),
                             "--config", str(tmp_path / "none.yaml")], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("expblip pipeline: error:")


def test_preflight_reads_the_llm_a_project_chose():
    """A project's llm_model replaces its model type's opt_model in the weight check: the
    Qwen2.5 config needs no OPT-6.7B; the paper config does."""
    from lavis_ext.method.paper import _model_config, _weight_requests

    projects = Path(__file__).resolve().parents[2] / "projects" / "exp_blip"
    qwen = [name for name, _ in _weight_requests(_model_config(projects /
                                                               "stage2_qwen2.5-1.5b.yaml"))]
    paper = [name for name, _ in _weight_requests(_model_config(projects / "stage2.yaml"))]
    assert "opt-6.7b" in paper and "opt-6.7b" not in qwen
    assert "eva_vit_g" in qwen


def test_preflight_asks_the_resolver_not_to_download_and_leaves_the_environment(monkeypatch):
    """The weight check passes download=False; it never sets LAVIS_EXT_OFFLINE (other
    threads, and the steps the pipeline then runs, would see it)."""
    from lavis_ext.models import weights
    from lavis_ext.method.paper import _check_weights

    monkeypatch.delenv("LAVIS_EXT_OFFLINE", raising=False)
    seen = []

    def resolve(name, value=None, download=True):
        seen.append((name, download, os.environ.get("LAVIS_EXT_OFFLINE")))
        return "/somewhere"

    monkeypatch.setattr(weights, "resolve", resolve)
    problems, notes = [], []
    _check_weights({"vit_model": "eva_clip_g", "opt_model": "facebook/opt-6.7b"}, problems,
                   notes)
    assert seen == [("eva_vit_g", False, None), ("opt-6.7b", False, None)]
    assert problems == [] and "LAVIS_EXT_OFFLINE" not in os.environ


def test_preflight_names_the_local_llm_folder_the_config_chose(tmp_path):
    """A missing local LLM folder is reported under the key that chose it, not as OPT-6.7B."""
    from lavis_ext.method.paper import _check_weights

    missing = tmp_path / "qwen2.5-1.5b"
    problems = []
    _check_weights({"vit_model": "eva_clip_g", "vit_weights_optional": True,
                    "llm_model": str(missing), "opt_model": "facebook/opt-6.7b",
                    "_default_llm": "facebook/opt-6.7b"}, problems, [])
    assert problems == [f"LLM folder '{missing}' (model.llm_model) does not exist: set "
                        "model.llm_model to a local copy of the LLM or to its Hugging Face "
                        "hub id"]
    assert not any("OPT" in p for p in problems)
    missing.mkdir()
    problems = []
    _check_weights({"vit_model": "eva_clip_g", "vit_weights_optional": True,
                    "opt_model": str(missing)}, problems, [])
    assert problems == []


def test_probe_entries_are_checked_with_the_others(tmp_path):
    """pipeline.probes: each bad entry is one problem naming its key; good ones load."""
    from lavis_ext.method.paper import load_config, plan

    config = _config(tmp_path, "http://127.0.0.1:9", probes=[
        {"config": str(REPO / "projects" / "probe" / "table3_bp4d_qformer_au.yaml"),
         "model": "au_blip", "options": ["run.max_epoch=1"]},
        {"config": str(REPO / "projects" / "probe" / "table3_bp4d_vitg.yaml")},
        {"config": "missing.yaml"},
        {"config": str(REPO / "projects" / "probe" / "table4_rafau_vitg.yaml"),
         "model": "mix_blip"},
        {"model": "au_blip"},
        {"config": str(REPO / "projects" / "probe" / "table3_bp4d_vitg.yaml"), "epochs": 3},
        # one config, another captioner: its own row (Table 3's QFormer(Mix) and ViT-G(AU))
        {"config": str(REPO / "projects" / "probe" / "table3_bp4d_vitg.yaml"),
         "model": "au_blip", "row": "ViT-G(AU)"},
        {"config": str(REPO / "projects" / "probe" / "table3_bp4d_vitg.yaml"),
         "model": "exp_blip", "row": "ViT-G(Exp); rm -rf"},
    ])
    problems = []
    cfg = load_config(config, problems)
    where = f"{config}: pipeline.probes"
    assert problems == [
        f"{where}[2].config: file not found: {tmp_path / 'missing.yaml'}",
        f"{where}[3].model: 'mix_blip' is not a model this pipeline trains; expected one of "
        "['au_blip', 'emot_blip', 'exp_blip'] or no model (a probe of the released encoder)",
        f"{where}[4]: needs 'config' (a probe config, e.g. "
        "projects/probe/table3_bp4d_qformer_au.yaml)",
        f"{where}[5]: unknown keys ['epochs']; expected config, model, options, row",
        f"{where}[5]: a second probe of table3_bp4d_vitg.yaml under the same row; give each "
        "probe of one config its own 'row' (its results go to runs/probe/<config "
        "name>[-<row>])",
        f"{where}[7].row: expected a table row name of letters, digits, spaces and ()-_.+, "
        "got 'ViT-G(Exp); rm -rf'",
        f"{where}[7]: a second probe of table3_bp4d_vitg.yaml under the same row; give each "
        "probe of one config its own 'row' (its results go to runs/probe/<config "
        "name>[-<row>])",
    ]
    loaded = [(p.name, p.model, p.options) for p in cfg.probes]
    assert loaded[:2] == [("probe-table3_bp4d_qformer_au", "au_blip", ("run.max_epoch=1",)),
                          ("probe-table3_bp4d_vitg", None, ())]
    assert loaded[-1] == ("probe-table3_bp4d_vitg-vit-g-au", "au_blip", ())
    row = cfg.probes[-1]
    assert row.folder == "table3_bp4d_vitg-vit-g-au"
    assert row.overrides() == ["run.probe.row_name=ViT-G(AU)"] and cfg.probes[1].overrides() == []
    assert [step.name for step, _ in plan(cfg)][-2:] == ["evaluate", "probe"]


def _newest(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern)) if folder.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(1200)  # under 1 min on 2 idle cores; minutes on a loaded machine
def test_pipeline_runs_every_step_and_resumes_a_killed_stage_2(tmp_path):
    """Every step of the shared table on tiny models and synthetic faces: synthesize, AU-BLIP
    and Emot-BLIP (stage 1 + 2), pseudo captions, fuse, concat, Exp-BLIP, evaluate, and a
    Q-Former probe (Table 3's AffectNet row) on Exp-BLIP's stage-2 run. The process is killed in the middle of Exp-BLIP's stage 2 (after its first checkpoint); the
    rerun resumes from that checkpoint and loses at most one checkpoint interval."""
    from support.llm_server import FaultyLLMServer

    with FaultyLLMServer() as server:
        # 48 faces each: every training split holds more than one batch of the tiny configs
        probe = {"config": "probe_affectnet_qformer_exp.yaml", "model": "exp_blip"}
        # the same config on AU-BLIP's run, under its own row (Table 3's QFormer(AU))
        row = {"config": "probe_affectnet_qformer_exp.yaml", "model": "au_blip",
               "row": "QFormer(AU)"}
        config = _config(tmp_path, server.base_url, n_images=48, probes=[probe, row])
        _tiny_probe(tmp_path)
        stage2 = tmp_path / "work" / "runs" / "exp_blip" / "stage2"
        command = [sys.executable, "-m", "lavis_ext.cli", "pipeline", "--config", str(config),
                   "--no-progress"]
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **NO_LLM})
        deadline = time.monotonic() + 900
        while not _newest(stage2, "*/checkpoint_0.pth"):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no Exp-BLIP stage-2 checkpoint in 15 min"
            time.sleep(0.5)
        first.kill()  # SIGKILL: no clean-up, as an OOM kill or a lost node would leave it
        first.wait()
        log.close()
        assert not (tmp_path / "work" / ".steps" / "train-exp-blip.json").exists()
        killed_at = {p.name for p in _newest(stage2, "*/checkpoint_*.pth")}
        assert "checkpoint_2.pth" not in killed_at, "killed before stage 2 ended"

        second = _expblip("pipeline", "--config", str(config), "--no-progress", cwd=tmp_path)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout
    for step in method_steps(baselines=False, probes=True):
        assert f"{step.name}" in out, step.name
    for done in ("synthesize", "train-au-blip", "train-emot-blip", "pseudo-au",
                 "pseudo-emotion", "fuse", "concat"):
        assert f"[skip] {done}: finished in an earlier run" in out, done  # the first process's
    epoch = max(int(name.split("_")[1].split(".")[0]) for name in killed_at)
    newest = next(iter(_newest(stage2, f"*/checkpoint_{epoch}.pth")))
    assert f"from {newest}" in out, out[-3000:]
    # resumed after the newest checkpoint: the epoch that was running when the process was
    # killed is lost, no finished one is trained again (LAVIS logs one stats line per epoch)
    stats = [line for log in _newest(stage2, "*/log.txt") for line in log.read_text().splitlines()
             if line.startswith('{"train_')]
    assert len(stats) == 3, stats
    assert _newest(stage2, "*/checkpoint_2.pth"), "stage 2 ran to its end"
    assert (stage2 / "stage_finished.json").exists()
    # the captions every step wrote, and every model evaluated
    au = json.loads((tmp_path / "work" / "captions" / "emotionet_train.json").read_text())
    emotion = json.loads((tmp_path / "work" / "captions" / "affectnet_train.json").read_text())
    assert all(r["captions"].get("emotion-pseudo") for r in au)
    assert all(r["captions"].get("au-pseudo") for r in emotion)
    assert any(r["captions"].get("fuse") for r in au + emotion)
    for model in ("au_blip", "emot_blip", "exp_blip"):
        results = _newest(tmp_path / "work" / "runs" / model / "evaluate", "**/*.json")
        assert results, f"{model}: no evaluation written"
    # the probe loaded Exp-BLIP's stage-2 run (its newest checkpoint: the last epoch's)
    probe_log = "\n".join(p.read_text() for p in
                          _newest(tmp_path / "work" / "runs" / "probe", "**/log.txt"))
    assert probe_log, "the probe step wrote no run"
    tables = _newest(tmp_path / "work" / "runs" / "probe" / "tables", "*.md")
    assert tables and "QFormer(Exp)" in tables[0].read_text(), tables
    assert "QFormer(AU)" in tables[0].read_text()  # the row entry: one more row, same table
    assert (tmp_path / "work" / "runs" / "probe" / "probe_affectnet_qformer_exp-qformer-au"
            ).is_dir()
    assert (tmp_path / "work" / ".steps" / "probe.json").exists()



def test_pipeline_rule_intensity_key(tmp_path):
    from lavis_ext.method.paper import load_config

    problems: list[str] = []
    assert load_config(PAPER, problems).intensity is None  # the paper's captions: no level
    text = PAPER.read_text().replace("rule_intensity: null", "rule_intensity: degree")
    (tmp_path / "p.yaml").write_text(text)
    assert load_config(tmp_path / "p.yaml", problems).intensity == "degree"
    (tmp_path / "p.yaml").write_text(text.replace("rule_intensity: degree",
                                                  "rule_intensity: loud"))
    load_config(tmp_path / "p.yaml", problems)
    assert any("rule_intensity" in p and "expected one of" in p for p in problems)
