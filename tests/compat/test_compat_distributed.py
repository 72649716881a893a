"""Process groups on CPU: backend choice, a world of one for LAVIS's unguarded collectives, the
logger's sync, torchrun with gloo."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

import compat_toy
from lavis.common.logger import MetricLogger, SmoothedValue
from lavis.runners import runner_base, runner_iter
from lavis_ext.compat import _patch
from lavis_ext.runners.distributed import BACKEND_ENV, choose_backend, start_process_group, world_of_one


HERE = Path(__file__).resolve().parent


def _run_cfg(**entries: object):
    return OmegaConf.create({"device": "cpu", "dist_url": "env://", "distributed": True, **entries})


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert choose_backend(_run_cfg()) == "gloo"
    assert choose_backend(_run_cfg(dist_backend="nccl")) == "nccl"
    monkeypatch.setenv(BACKEND_ENV, "GLOO")
    assert choose_backend(_run_cfg(dist_backend="nccl")) == "gloo"
    monkeypatch.setenv(BACKEND_ENV, "tcp")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        choose_backend(_run_cfg())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(plain_process_env: None) -> None:
    with pytest.raises(RuntimeError, match=r"run\.device is 'cuda'"):
        start_process_group(_run_cfg(device="cuda"))


def test_nccl_for_a_cpu_run_is_refused(single_rank_env: None) -> None:
    with pytest.raises(RuntimeError, match=r"nccl backend needs run\.device: cuda"):
        start_process_group(_run_cfg(dist_backend="nccl"))
    assert not dist.is_initialized()


def test_plain_process_stays_non_distributed(plain_process_env: None) -> None:
    cfg = _run_cfg()
    start_process_group(cfg)
    assert cfg.distributed is False and not dist.is_initialized()
    for module in (runner_base, runner_iter):  # LAVIS's runner modules keep torch's dist
        assert module.dist is dist
        with pytest.raises((RuntimeError, ValueError)):
            module.dist.barrier()  # what LAVIS's train() calls after every epoch
    with world_of_one() as started:
        assert started and dist.get_world_size() == 1 and dist.get_rank() == 0
        runner_base.dist.barrier()
    assert not dist.is_initialized()


def test_world_of_one_leaves_an_existing_group_alone(single_rank_env: None) -> None:
    start_process_group(_run_cfg())
    with world_of_one() as started:
        assert started is False
    assert dist.is_initialized()


def test_logger_sync_on_a_gloo_group(single_rank_env: None) -> None:
    cfg = _run_cfg()
    start_process_group(cfg)
    assert cfg.distributed is True and cfg.dist_backend == "gloo"
    assert dist.is_initialized() and dist.get_backend() == "gloo"

    logger = MetricLogger()
    for value in (1.0, 2.0, 6.0):
        logger.update(loss=value)
    logger.synchronize_between_processes()
    assert logger.meters["loss"].count == 3
    assert logger.meters["loss"].total == pytest.approx(9.0)
    if not torch.cuda.is_available():  # the LAVIS code it replaces puts the tensor on CUDA
        stock = _patch.original(SmoothedValue, "synchronize_between_processes")
        with pytest.raises((RuntimeError, AssertionError)):
            stock(logger.meters["loss"])


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train(tmp_path: Path) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 2})
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(HERE / "launch_toy_train.py"), "--cfg-path", str(cfg),
        ],
        cwd=compat_toy.REPO_ROOT, capture_output=True, text=True, timeout=150,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "rank 0 of 2, gloo" in output and "rank 1 of 2, gloo" in output
    jobs = compat_toy.job_dirs(tmp_path / "out")
    assert len(jobs) == 1, jobs  # both ranks agreed on the job id
    assert sorted(p.name for p in jobs[0].glob("checkpoint_*.pth")) == ["checkpoint_0.pth", "checkpoint_1.pth"]
    assert len(compat_toy.train_losses(jobs[0])) == 2
