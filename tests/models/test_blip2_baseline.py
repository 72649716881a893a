"""expblip_blip2_opt (the Table 2 BLIP-2 rows): LAVIS's Blip2OPT whose OPT becomes the plugin's
class in place, so that it decodes with the KV cache (and, on current transformers, at all)."""
from __future__ import annotations

import copy

import pytest
import torch

import lavis_ext  # noqa: F401  (registers the models)
from lavis.common.registry import registry
from lavis.models.blip2_models.blip2_opt import Blip2OPT
from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

from lavis_ext.models.blip2_baseline import ARCH, ExpBlipBlip2OPT, adopt_plugin_opt
from lavis_ext.models.opt import ExpBlipOPTForCausalLM


class Steps:
    """Positions each LLM call computes (queries, ids or embeddings)."""

    def __init__(self, llm: torch.nn.Module) -> None:
        self.lengths: list[int] = []
        llm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, _args, kwargs) -> None:
        self.lengths.append(sum(kwargs[k].shape[1] for k in ("input_ids", "inputs_embeds",
                                                             "query_embeds")
                                if kwargs.get(k) is not None))


def _with_stock_opt(model):
    """The tiny captioner with LAVIS's own OPT class holding the same weights."""
    stock = OPTForCausalLM(model.opt_model.config)
    stock.load_state_dict(model.opt_model.state_dict())
    stock.eval()
    twin = copy.copy(model)
    twin._modules = dict(model._modules, opt_model=stock)
    return twin


def test_registered_with_lavis_model_types():
    assert registry.get_model_class(ARCH) is ExpBlipBlip2OPT
    assert ExpBlipBlip2OPT.PRETRAINED_MODEL_CONFIG_DICT == Blip2OPT.PRETRAINED_MODEL_CONFIG_DICT


def test_init_adopts_the_plugin_opt(monkeypatch, tiny_stage2):
    built = _with_stock_opt(tiny_stage2[0]).opt_model

    def stock_init(self, *args, **kwargs):  # LAVIS's builder, without ViT-G and OPT-6.7B
        torch.nn.Module.__init__(self)
        self.opt_model = built

    monkeypatch.setattr(Blip2OPT, "__init__", stock_init)
    model = ExpBlipBlip2OPT()
    assert type(model.opt_model) is ExpBlipOPTForCausalLM and model.opt_model is built


def test_adopted_opt_decodes_with_the_cache_and_the_same_captions(tiny_stage2, images):
    import transformers
    from packaging.version import Version

    model = tiny_stage2[0]
    twin = _with_stock_opt(model)
    kwargs = dict(num_beams=3, max_length=6, min_length=1)
    stock_can_generate = Version(transformers.__version__) < Version("4.46")
    if stock_can_generate:  # paper stack: LAVIS's class re-runs the whole sequence
        stock = Steps(twin.opt_model)
        before = twin.generate({"image": images[:1]}, **kwargs)
        assert max(stock.lengths[1:]) > 1
    else:  # current: LAVIS's class has no generate
        with pytest.raises(AttributeError):
            twin.generate({"image": images[:1]}, **kwargs)
    adopt_plugin_opt(twin.opt_model)
    assert type(twin.opt_model) is ExpBlipOPTForCausalLM
    assert list(twin.opt_model.state_dict()) == list(model.opt_model.state_dict())
    ours = Steps(twin.opt_model)
    after = twin.generate({"image": images[:1]}, **kwargs)
    assert ours.lengths[0] > 1 and set(ours.lengths[1:]) <= {1}, ours.lengths
    if stock_can_generate:
        assert after == before


def test_only_lavis_opt_is_adopted():
    with pytest.raises(TypeError, match="OPTForCausalLM"):
        adopt_plugin_opt(torch.nn.Linear(2, 2))
