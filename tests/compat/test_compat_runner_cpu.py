"""The plugin's runners (runner_expblip, runner_expblip_iter) train, checkpoint and resume the
toy model on CPU in one process, through LAVIS's RunnerBase / RunnerIter bodies."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import compat_toy
import train
from lavis.common.registry import registry
from lavis.datasets.datasets.dataloader_utils import IterLoader
from lavis.runners.runner_base import RunnerBase

from lavis_ext.runners import ExpBlipRunner, loaders


def _runner(cfg_path: Path, *options: str):
    args = train.parse_args(["--cfg-path", str(cfg_path), *(["--options", *options] if options else [])])
    return train.build_runner(args)


def _only_job(out: Path) -> Path:
    jobs = compat_toy.job_dirs(out)
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_train_single_process_cpu(tmp_path: Path, plain_process_env: None) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 3})
    assert train.main(["--cfg-path", str(cfg)]) == 0
    job = _only_job(tmp_path / "out")
    losses = compat_toy.train_losses(job)
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert sorted(p.name for p in job.glob("checkpoint_*.pth")) == [f"checkpoint_{i}.pth" for i in range(3)]
    assert not dist.is_initialized()


def test_cpu_loaders_are_not_prefetched_to_cuda(tmp_path: Path, plain_process_env: None) -> None:
    runner = _runner(compat_toy.write_run_config(tmp_path))
    train_loader = runner.dataloaders["train"]  # LAVIS's IterLoader around the loader
    assert isinstance(train_loader._dataloader, DataLoader)
    assert train_loader._dataloader.pin_memory is False
    test_loader = runner.dataloaders["test"]
    assert isinstance(test_loader, DataLoader)
    assert len(list(test_loader)) == 4


def test_prefetch_still_used_for_cuda_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    class RecordingPrefetch:
        def __init__(self, loader: object) -> None:
            made.append(loader)

    monkeypatch.setattr(loaders, "PrefetchLoader", RecordingPrefetch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    data = list(range(4))
    common = dict(batch_size=2, num_workers=0, is_train=False, collate_fn=None, sampler=None,
                  distributed=False)
    on_cuda = loaders.build_loader(data, device=torch.device("cuda"), **common)
    assert isinstance(on_cuda, RecordingPrefetch) and made[0].pin_memory is True
    on_cpu = loaders.build_loader(data, device=torch.device("cpu"), **common)
    assert isinstance(on_cpu, DataLoader) and on_cpu.pin_memory is False and len(made) == 1


def test_yaml_without_runner_gets_the_plugin_runner(tmp_path: Path, plain_process_env: None) -> None:
    runner = _runner(compat_toy.write_run_config(tmp_path))
    assert type(runner) is ExpBlipRunner and isinstance(runner, RunnerBase)
    assert isinstance(runner.dataloaders["train"], IterLoader)  # what LAVIS's loop expects
    for name in ("output_dir", "result_dir"):  # stock LAVIS cannot register them twice
        registry.mapping["paths"].pop(name)
    stock = _runner(compat_toy.write_run_config(tmp_path, run={"runner": "runner_base"}))
    assert type(stock) is RunnerBase  # asked for by name: LAVIS's own, unchanged
    assert stock.model is None  # LAVIS 1.0.2's bug on CPU, which runner_expblip fixes


def test_model_property_on_cpu_returns_the_model(tmp_path: Path, plain_process_env: None) -> None:
    runner = _runner(compat_toy.write_run_config(tmp_path))
    assert not runner.use_distributed
    assert runner.model is runner._model
    assert runner.model is runner.model


def test_model_property_wraps_ddp_without_device_ids_on_gloo(tmp_path: Path, single_rank_env: None) -> None:
    runner = _runner(compat_toy.write_run_config(tmp_path))
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    assert runner.use_distributed
    wrapped = runner.model
    assert isinstance(wrapped, DistributedDataParallel)
    assert wrapped.device_ids is None
    assert runner.model is wrapped  # built once
    assert runner.unwrap_dist_model(wrapped) is runner._model


def test_resume_continues_epoch_with_saved_weights(tmp_path: Path, plain_process_env: None) -> None:
    first = tmp_path / "first"
    first.mkdir()
    cfg = compat_toy.write_run_config(first, run={"max_epoch": 2})
    train.main(["--cfg-path", str(cfg)])
    ckpt_path = _only_job(first / "out") / "checkpoint_1.pth"
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and isinstance(saved["config"], dict)
    assert "frozen.weight" not in saved["model"]  # frozen parameters are left out

    second = tmp_path / "second"
    second.mkdir()
    cfg2 = compat_toy.write_run_config(second, run={"max_epoch": 3, "resume_ckpt_path": str(ckpt_path)})
    runner = _runner(cfg2)
    runner._load_checkpoint(str(ckpt_path))
    assert runner.start_epoch == 2
    model_state = runner.unwrap_dist_model(runner.model).state_dict()
    for key, value in saved["model"].items():
        assert torch.equal(model_state[key], value), key
    opt_state = runner.optimizer.state_dict()["state"]
    for index, state in saved["optimizer"]["state"].items():
        assert torch.equal(opt_state[index]["exp_avg"], state["exp_avg"])

    assert train.main(["--cfg-path", str(cfg2)]) == 0
    job = _only_job(second / "out")
    assert [p.name for p in job.glob("checkpoint_*.pth")] == ["checkpoint_2.pth"]
    assert len(compat_toy.train_losses(job)) == 1
    resumed = torch.load(job / "checkpoint_2.pth", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 2
    assert not torch.equal(resumed["model"]["head.weight"], saved["model"]["head.weight"])


def test_resume_reports_missing_file_and_finished_runs(tmp_path: Path, plain_process_env: None) -> None:
    missing = tmp_path / "nope.pth"
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 1, "resume_ckpt_path": str(missing)})
    with pytest.raises(FileNotFoundError, match=r"run\.resume_ckpt_path.*nope\.pth"):
        train.main(["--cfg-path", str(cfg)])

    runner = _runner(compat_toy.write_run_config(tmp_path, run={"max_epoch": 1}))
    runner._save_checkpoint(0)
    ckpt = next(Path(runner.output_dir).glob("checkpoint_0.pth"))
    with pytest.raises(ValueError, match=r"epoch 0, the end of run\.max_epoch=1"):
        runner._load_checkpoint(str(ckpt))


def test_resume_rejects_missing_trainable_weights(tmp_path: Path, plain_process_env: None) -> None:
    runner = _runner(compat_toy.write_run_config(tmp_path))
    runner._save_checkpoint(0)
    path = Path(runner.output_dir) / "checkpoint_0.pth"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["head.bias"]
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match=r"missing trainable keys \['head.bias'\]"):
        runner._load_checkpoint(str(path))


def test_relative_output_dir_resolves_against_cwd(tmp_path: Path, plain_process_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = _runner(compat_toy.write_run_config(tmp_path, run={"output_dir": "rel_out"}))
    assert Path(runner.output_dir).parent == tmp_path / "rel_out"
    assert runner.config.run_cfg.output_dir == str(tmp_path / "rel_out")
    second = _runner(compat_toy.write_run_config(tmp_path, run={"output_dir": "rel_out2"}))
    assert Path(second.output_dir).parent == tmp_path / "rel_out2"  # a second runner, one process


def test_iteration_runner_trains_and_resumes(tmp_path: Path, plain_process_env: None) -> None:
    first = tmp_path / "first"
    first.mkdir()
    run = {"runner": "runner_expblip_iter", "max_iters": 8, "iters_per_inner_epoch": 4}
    cfg = compat_toy.write_run_config(first, run=run)
    assert train.main(["--cfg-path", str(cfg)]) == 0
    job = _only_job(first / "out")
    assert sorted(p.name for p in job.glob("checkpoint_*.pth")) == ["checkpoint_4.pth", "checkpoint_8.pth"]
    # Frozen weights stay out of the iteration runner's checkpoints, as in RunnerBase's.
    saved = torch.load(job / "checkpoint_8.pth", weights_only=True)["model"]
    assert sorted(saved) == ["head.bias", "head.weight"]

    second = tmp_path / "second"
    second.mkdir()
    resume = {**run, "max_iters": 12, "resume_ckpt_path": str(job / "checkpoint_8.pth")}
    assert train.main(["--cfg-path", str(compat_toy.write_run_config(second, run=resume))]) == 0
    assert [p.name for p in _only_job(second / "out").glob("checkpoint_*.pth")] == ["checkpoint_12.pth"]
