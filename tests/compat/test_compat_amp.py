"""Mixed precision follows the run device and run.amp_dtype, through torch.amp: the plugin's
runner (scaler), tasks (train-step autocast, bind_run) and models (maybe_autocast)."""
from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest
import torch

import compat_toy
import train
from lavis.models.blip2_models.blip2 import Blip2Base
from omegaconf import OmegaConf

from lavis_ext.models.lavis_hooks import autocast_context
from lavis_ext.runners.amp import amp_plan, plan_for_runner


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
    runner = types.SimpleNamespace(device=torch.device(device), config=config)
    runner.amp_plan = plan_for_runner(runner)
    return runner


def _autocast_seen_by_train_step(runner: types.SimpleNamespace) -> tuple[bool, torch.dtype]:
    task = compat_toy.ToyRegressionTask()
    task.bind_run(runner)
    seen = []

    class Model:
        def __call__(self, samples: dict) -> dict:
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return {"loss": torch.zeros(())}

    task.train_step(Model(), {})
    return seen[0]


def test_train_step_autocasts_for_the_bound_run() -> None:
    assert _autocast_seen_by_train_step(_fake_runner("cpu", amp=True, amp_dtype="bfloat16")) == (True, torch.bfloat16)
    assert _autocast_seen_by_train_step(_fake_runner("cpu", amp=False, amp_dtype="bfloat16"))[0] is False
    assert _autocast_seen_by_train_step(_fake_runner("cpu", amp=True, amp_dtype="float16"))[0] is False


def test_evaluation_batches_stay_on_the_bound_run_device() -> None:
    task = compat_toy.ToyRegressionTask()
    seen = []
    task.valid_step = lambda model, samples: seen.append(samples["x"].device) or [0.0]
    loader = [{"x": torch.zeros(2)}]
    task.bind_run(_fake_runner("cpu"))
    task.evaluation(None, loader)  # LAVIS's default cuda_enabled=True would call .cuda()
    assert seen == [torch.device("cpu")]


def test_maybe_autocast_by_device() -> None:
    on_cpu = types.SimpleNamespace(device=torch.device("cpu"))
    stock = Blip2Base.maybe_autocast.__get__(on_cpu)
    with autocast_context(on_cpu.device, torch.float16, stock):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(on_cpu.device, torch.bfloat16, stock):
        assert torch.is_autocast_enabled("cpu")
    with stock(torch.bfloat16):  # LAVIS's own never autocasts on CPU
        assert not torch.is_autocast_enabled("cpu")
    with warnings.catch_warnings():  # torch warns that CUDA autocast is off without a GPU
        warnings.simplefilter("ignore", UserWarning)
        ctx = autocast_context(torch.device("cuda", 0), torch.float16, stock)
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
