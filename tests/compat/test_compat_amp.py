"""Mixed precision follows the run device and run.amp_dtype, through torch.amp."""
from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest
import torch

import compat_toy
import train
from lavis.models.blip2_models.blip2 import Blip2Base
from lavis.tasks import base_task
from omegaconf import OmegaConf

from lavis_ext.compat.amp import amp_plan
from lavis_ext.compat.run_context import running


@pytest.mark.parametrize(
    "device, dtype, enabled, scaler",
    [
        ("cuda", "float16", True, True),
        ("cuda", "bfloat16", True, False),
        ("cpu", "bfloat16", True, False),
        ("cpu", "float16", False, False),
        ("cpu", None, False, False),
    ],
)
def test_amp_plan_table(device: str, dtype: str | None, enabled: bool, scaler: bool) -> None:
    plan = amp_plan(device, True, dtype)
    assert (plan.device_type, plan.enabled, plan.use_scaler) == (device, enabled, scaler)
    assert amp_plan(device, False, dtype).enabled is False


def test_bad_amp_dtype_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"run\.amp_dtype='int8'"):
        amp_plan("cpu", True, "int8")


def _fake_runner(device: str, **run: object) -> types.SimpleNamespace:
    config = types.SimpleNamespace(run_cfg=OmegaConf.create(run))
    return types.SimpleNamespace(device=torch.device(device), config=config)


def test_train_loop_autocast_uses_torch_amp_for_the_run_device() -> None:
    with running(_fake_runner("cpu", amp=True, amp_dtype="bfloat16")):
        with base_task.torch.cuda.amp.autocast(enabled=True):
            assert torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        with base_task.torch.cuda.amp.autocast(enabled=False):
            assert not torch.is_autocast_enabled("cpu")
    with running(_fake_runner("cpu", amp=True, amp_dtype="float16")):
        with base_task.torch.cuda.amp.autocast(enabled=True):
            assert not torch.is_autocast_enabled("cpu")


def test_maybe_autocast_by_device() -> None:
    on_cpu = types.SimpleNamespace(device=torch.device("cpu"))
    with Blip2Base.maybe_autocast(on_cpu):
        assert not torch.is_autocast_enabled("cpu")
    with Blip2Base.maybe_autocast(on_cpu, dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 0))
    with warnings.catch_warnings():  # torch warns that CUDA autocast is off without a GPU
        warnings.simplefilter("ignore", UserWarning)
        ctx = Blip2Base.maybe_autocast(on_gpu)
    assert type(ctx) is torch.amp.autocast and ctx.device == "cuda"  # not torch.cuda.amp.autocast


class _RecordingToy(compat_toy.ToyRegression):
    def forward(self, samples: dict) -> dict:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return super().forward(samples)


@pytest.mark.parametrize("amp_dtype, expect_autocast", [("bfloat16", True), ("float16", False)])
def test_runner_amp_on_cpu(tmp_path: Path, plain_process_env: None, amp_dtype: str, expect_autocast: bool) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 1, "amp": True, "amp_dtype": amp_dtype})
    runner = train.build_runner(train.parse_args(["--cfg-path", str(cfg)]))
    model = _RecordingToy()
    model.seen = []
    runner._model = model
    scaler = runner.scaler
    assert type(scaler) is torch.amp.GradScaler and not scaler.is_enabled()
    runner.train()
    assert model.seen and all(on == expect_autocast for on, _ in model.seen)
    if expect_autocast:
        assert all(dtype == torch.bfloat16 for _, dtype in model.seen)
    assert list(Path(runner.output_dir).glob("checkpoint_0.pth"))


def test_no_scaler_without_amp(tmp_path: Path, plain_process_env: None) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"amp": False})
    runner = train.build_runner(train.parse_args(["--cfg-path", str(cfg)]))
    assert runner.scaler is None
