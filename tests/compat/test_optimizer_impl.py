"""run.optimizer_impl: the runner's AdamW rebuilt with torch's fused / foreach kernels."""
from __future__ import annotations

import copy

import pytest
import torch

from lavis_ext.errors import InputError
from tests.compat.test_compat_layer_decay import _runner


def _kernel(optimizer: torch.optim.Optimizer) -> tuple:
    return tuple((g["fused"], g["foreach"]) for g in optimizer.param_groups)


@pytest.mark.parametrize("decay", [1.0, 0.5])  # LAVIS's optimizer, and the layer-decay one
def test_fused_keeps_groups_and_gives_the_same_update(decay: float) -> None:
    stock, fused = _runner(lr_layer_decay=decay), _runner(lr_layer_decay=decay,
                                                          optimizer_impl="fused")
    fused._model = copy.deepcopy(stock.model)
    a, b = stock.optimizer, fused.optimizer
    assert fused.optimizer is b  # built once
    assert type(b) is torch.optim.AdamW and all(f for f, _ in _kernel(b))
    assert not any(f for f, _ in _kernel(a))  # LAVIS's: the per-tensor loop on CPU
    strip = lambda g: {k: v for k, v in g.items() if k not in ("params", "fused", "foreach")}
    assert [strip(g) for g in a.param_groups] == [strip(g) for g in b.param_groups]
    assert [len(g["params"]) for g in a.param_groups] == [len(g["params"]) for g in b.param_groups]
    before = [p.detach().clone() for p in stock.model.parameters()]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for runner, optimizer in ((stock, a), (fused, b)):
        for _ in range(3):
            loss = runner.model.opt_proj(runner.model.ln_vision(
                runner.model.visual_encoder(x))).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert not any(torch.equal(p, p0) for p, p0 in zip(stock.model.parameters(), before))
    for p, q in zip(stock.model.parameters(), fused.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)  # float rounding only


def test_foreach_and_unknown_values() -> None:
    assert all(fe for _, fe in _kernel(_runner(optimizer_impl="foreach").optimizer))
    with pytest.raises(InputError, match="run.optimizer_impl must be one of"):
        _ = _runner(optimizer_impl="apex").optimizer
