"""Stage 2 with any causal LM: the tiny Llama and Qwen2 captioners (inputs_embeds path), the
llm_model / opt_model key, and the errors for LLMs this transformers cannot run.

The Llama/Qwen2 tests need the current stack: transformers 4.26.1 (the paper stack) has no
Llama or Qwen2 classes, and its decoder-only ``generate`` does not take ``inputs_embeds``.
"""
import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers the models)
from lavis_ext.models.exp_blip import ExpBlip
from lavis_ext.models.llm import GENERIC_MIN_TRANSFORMERS, choose_llm_model
from lavis_ext.models.paths import MissingModelFileError
from support.generation import assert_no_repeated_bigrams


def _current_stack() -> bool:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(GENERIC_MIN_TRANSFORMERS)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


current_only = pytest.mark.skipif(
    not _current_stack(),
    reason=f"transformers {_transformers_version()} (paper stack) has no Llama/Qwen2 classes "
           f"and no decoder-only generate(inputs_embeds=); needs >= {GENERIC_MIN_TRANSFORMERS} "
           "(.venv-current)")
FAMILIES = ("llama", "qwen2")
TEXT = ["It is a person who raises cheek and pulls lip corner.", "A face with a dropped jaw."]


def _cfg(family: str, **overrides):
    """The tiny type's config; its LM pre-trained briefly (these tests check mechanics, not
    learning: test_tiny_learning.py does that with the full pre-training)."""
    cfg = OmegaConf.load(ExpBlip.default_config_path(f"tiny_{family}")).model
    cfg.tiny_lm.pretrain_steps = 30
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    if not _current_stack():
        pytest.skip(current_only.kwargs["reason"])
    torch.manual_seed(0)
    return request.param, ExpBlip.from_config(_cfg(request.param))


@pytest.fixture()
def images():
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def _captured_llm_call(model, monkeypatch) -> dict:
    seen: dict = {}
    forward = model.opt_model.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.opt_model, "forward", spy)
    return seen


@current_only
def test_trains_one_step_through_inputs_embeds(tiny, images, monkeypatch):
    family, model = tiny
    assert model.llm_family.name == "causal"
    assert model.opt_model.config.model_type == family
    model.train()
    seen = _captured_llm_call(model, monkeypatch)
    loss = model({"image": images, "text_input": TEXT})["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert "inputs_embeds" in seen and "query_embeds" not in seen
    assert model.opt_proj.weight.grad is not None
    assert all(p.grad is None for p in model.opt_model.parameters()), "the LLM stays frozen"
    model.zero_grad()
    model.eval()


@current_only
def test_targets_follow_the_family_conventions(tiny, images, monkeypatch):
    """Each caption's targets end with the tokenizer's EOS (not "\\n"), padding carries no loss
    although Qwen2 pads with its EOS id, Llama's BOS starts the text and Qwen2 has none."""
    family, model = tiny
    tokenizer = model.opt_tokenizer
    assert model.eos_token_id == tokenizer.eos_token_id
    seen = _captured_llm_call(model, monkeypatch)
    with torch.no_grad():
        model({"image": images, "text_input": TEXT})
    labels, mask = seen["labels"], seen["attention_mask"]
    queries = model.query_tokens.shape[1]
    assert (labels[:, :queries] == -100).all()
    for row, text in zip(range(len(TEXT)), TEXT):
        kept = labels[row][labels[row] != -100].tolist()
        assert kept[-1] == tokenizer.eos_token_id
        assert int(mask[row].sum()) == queries + len(kept)
        body = tokenizer(text, add_special_tokens=False).input_ids
        lead = [tokenizer.bos_token_id] if family == "llama" else []
        assert kept == lead + body + [tokenizer.eos_token_id]
    if family == "qwen2":
        assert tokenizer.bos_token_id is None and tokenizer.pad_token_id == tokenizer.eos_token_id
        assert model._prompt_ids("", 2, torch.device("cpu")).shape == (2, 0)
    else:
        ids = model._prompt_ids("", 2, torch.device("cpu"))
        assert ids.tolist() == [[tokenizer.bos_token_id]] * 2


@current_only
def test_generates_with_beams_greedy_and_sampling(tiny, images):
    _, model = tiny
    model.eval()
    beams = model.generate({"image": images}, num_beams=5, max_length=20)
    assert len(beams) == 2 and all(isinstance(c, str) for c in beams)
    assert len(model.generate({"image": images}, num_beams=5, num_captions=3,
                              max_length=10)) == 6
    greedy = model.generate({"image": images}, num_beams=1, max_length=20)
    assert len(greedy) == 2
    torch.manual_seed(0)
    sampled = model.generate({"image": images}, use_nucleus_sampling=True, num_captions=3,
                             max_length=20)
    assert len(sampled) == 6
    texts = model.generate({"image": images}, num_beams=2, max_length=40,
                           no_repeat_ngram_size=2)
    assert_no_repeated_bigrams(model.opt_tokenizer, texts)


@current_only
@pytest.mark.parametrize("num_beams", [1, 5])
def test_generation_stops_at_the_eos_token(tiny, images, monkeypatch, num_beams):
    """Once EOS is the likeliest token after three words, every caption is those three words:
    generation stopped there (max_length is 30) and EOS is not in the text."""
    _, model = tiny
    model.eval()
    eos, word = model.eos_token_id, model.opt_tokenizer(" cheek", add_special_tokens=False
                                                       ).input_ids[-1]
    steps = {"n": 0}

    def steer(module, inputs, output):
        logits = output.clone()
        favourite = word if steps["n"] < 3 else eos
        logits[:, -1, favourite] += 1000.0
        steps["n"] += 1
        return logits

    handle = model.opt_model.get_output_embeddings().register_forward_hook(steer)
    generate = model.opt_model.generate
    produced = {}

    def keep(*args, **kwargs):
        produced["ids"] = out = generate(*args, **kwargs)
        return out

    monkeypatch.setattr(model.opt_model, "generate", keep)
    try:
        captions = model.generate({"image": images}, num_beams=num_beams, max_length=30)
    finally:
        handle.remove()
    assert captions == [model.opt_tokenizer.decode([word] * 3).strip()] * 2
    assert produced["ids"].shape[1] == 4 and (produced["ids"][:, -1] == eos).all()


@current_only
def test_checkpoint_round_trip(tiny, images, tmp_path):
    family, model = tiny
    model.eval()
    path = tmp_path / "ckpt.pth"
    trained = {k: v for k, v in model.state_dict().items() if not k.startswith("opt_model.")}
    torch.save({"model": trained}, path)
    torch.manual_seed(123)  # a different random start for everything the file supplies
    other = ExpBlip.from_config(_cfg(family)).eval()
    other.load_checkpoint(str(path))
    with torch.no_grad():
        assert torch.equal(other._llm_prefix(images), model._llm_prefix(images))
    assert other.generate({"image": images}, num_beams=3, max_length=15) == model.generate(
        {"image": images}, num_beams=3, max_length=15)


@current_only
def test_bf16_llm_on_cpu():
    torch.manual_seed(0)
    model = ExpBlip.from_config(_cfg("qwen2", llm_dtype="bfloat16"))
    assert {p.dtype for p in model.opt_model.parameters()} == {torch.bfloat16}
    assert model.opt_proj.weight.dtype == torch.float32
    model.float()  # what LAVIS's CPU loaders call
    assert {p.dtype for p in model.opt_model.parameters()} == {torch.bfloat16}
    images = torch.randn(2, 3, 112, 112)
    model.train()
    loss = model({"image": images, "text_input": TEXT})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.opt_proj.weight.grad is not None
    model.eval()
    assert len(model.generate({"image": images}, num_beams=5, max_length=10)) == 2


@current_only
def test_parameters_and_cpu_dtype_of_a_real_size_config():
    """Qwen2.5-1.5B's shape, counted on the meta device: ~1.54B parameters (tied output layer
    counted once), so ``llm_dtype: auto`` keeps it bf16 on CPU."""
    from transformers import AutoConfig

    from lavis_ext.models.llm import estimate_parameters, resolve_llm_dtype

    config = AutoConfig.for_model(
        "qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        tie_word_embeddings=True)
    params = estimate_parameters(config)
    assert 1.50e9 < params < 1.56e9, params
    assert resolve_llm_dtype("auto", "cpu", parameters=params) == torch.bfloat16


def test_llm_model_and_opt_model_are_one_key():
    assert choose_llm_model("tiny", None) == "tiny" and choose_llm_model(None, "x") == "x"
    assert choose_llm_model("x", "x") == "x"
    assert choose_llm_model("facebook/opt-6.7b", "Qwen/Qwen2.5-1.5B",
                            default="facebook/opt-6.7b") == "Qwen/Qwen2.5-1.5B"
    assert choose_llm_model("/my/opt", "tiny", default="tiny") == "/my/opt"
    with pytest.raises(ValueError, match="give one of them"):
        choose_llm_model("facebook/opt-2.7b", "Qwen/Qwen2.5-1.5B")
    # merged over a model type's defaults: the key the project set wins over the default
    cfg = OmegaConf.merge(OmegaConf.load(ExpBlip.default_config_path("vitg_opt6.7b")).model,
                          {"llm_model": "Qwen/Qwen2.5-1.5B"})
    assert ExpBlip._llm_name(cfg) == "Qwen/Qwen2.5-1.5B"
    cfg = OmegaConf.merge(OmegaConf.load(ExpBlip.default_config_path("tiny_qwen2")).model,
                          {"opt_model": "/my/opt-folder"})
    assert ExpBlip._llm_name(cfg) == "/my/opt-folder"
    cfg.llm_model = "Qwen/Qwen2.5-1.5B"
    with pytest.raises(ValueError, match="model.llm_model .* and model.opt_model"):
        ExpBlip._llm_name(cfg)


def test_hub_llm_outside_the_manifest_offline_is_a_clear_error(tmp_path, monkeypatch):
    from lavis_ext.models.llm import llm_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingModelFileError, match="not in the Hugging Face cache.*offline"):
        llm_config("lavis-ext-tests/no-such-llm")


@pytest.mark.skipif(_current_stack(), reason="the paper stack's refusal; this transformers "
                                             "runs Llama")
def test_paper_stack_refuses_a_llama_folder_with_the_reason(tmp_path):
    from lavis_ext.models.llm import llm_config

    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    with pytest.raises(ValueError, match=f"transformers >= {GENERIC_MIN_TRANSFORMERS}.*"
                                         "--stack current"):
        llm_config(str(tmp_path))


@current_only
def test_llm_folder_loads_in_its_dtype_and_matches_transformers(tmp_path):
    """load_causal_lm_weights: built in bf16 with the initialisers off, filled from sharded
    safetensors; the same model as transformers' from_pretrained, tied output layer kept."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lavis_ext.models.llm import load_causal_lm_weights

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", vocab_size=64, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, tie_word_embeddings=True)
    reference = AutoModelForCausalLM.from_config(config).eval()
    reference.save_pretrained(str(tmp_path), max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    init = torch.nn.init.kaiming_uniform_
    model = load_causal_lm_weights(tmp_path, torch.bfloat16)
    assert torch.nn.init.kaiming_uniform_ is init, "initialisers restored"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.tensor([[2, 5, 9, 11]])
    expected = reference.to(torch.bfloat16)(input_ids=ids).logits
    assert torch.equal(model(input_ids=ids).logits, expected)
