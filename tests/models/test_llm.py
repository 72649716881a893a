import pytest
import torch

from lavis_ext.models.llm import resolve_llm_dtype
from lavis_ext.models.tiny_lm import build_tiny_lm


def test_llm_dtype_follows_the_target_device_not_the_host(monkeypatch):
    """A CPU model on a CUDA host gets the CPU policy (the host is faked to have CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_llm_dtype("auto", "cpu") == torch.float32
    assert resolve_llm_dtype("auto", "cpu", parameters=6_700_000_000) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_llm_dtype("auto", "cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_llm_dtype("auto", "cuda") == torch.float16
    assert resolve_llm_dtype("float16", "cpu") == torch.float16
    assert resolve_llm_dtype("half", "cpu") == torch.float16  # the aliases of run.amp_dtype
    with pytest.raises(ValueError, match="llm_dtype"):
        resolve_llm_dtype("int8", "cpu")


def test_half_llm_on_cpu_runs_as_given():
    """LAVIS loads OPT in fp16, which fails on CPU without autocast ('mixed dtype (CPU)');
    the LLM keeps the dtype it was given (no silent fp32 cast, which doubled its memory)."""
    import lavis  # noqa: F401  (registers lavis_ext's models)
    from omegaconf import OmegaConf

    from lavis_ext.models.exp_blip import ExpBlip

    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny")).model
    cfg.llm_dtype = "float16"
    model = ExpBlip.from_config(cfg)
    assert next(model.opt_model.parameters()).dtype == torch.float16
    out = model({"image": torch.randn(2, 3, 112, 112), "text_input": ["a", "b"]})
    assert torch.isfinite(out["loss"])
    assert next(model.opt_model.parameters()).dtype == torch.float16


def _saved_weights(folder) -> dict:
    """save_pretrained's weights: model.safetensors (transformers >= 4.35) or pytorch_model.bin."""
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


@pytest.mark.slow
def test_tiny_lm_is_deterministic(tmp_path):
    settings = dict(pretrain_steps=3, corpus_size=50, vocab_size=300, seed=7)
    a = build_tiny_lm(tmp_path / "a", **settings)
    b = build_tiny_lm(tmp_path / "b", **settings)
    assert (a / "vocab.json").read_text() == (b / "vocab.json").read_text()
    wa, wb = _saved_weights(a), _saved_weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = build_tiny_lm(tmp_path / "c", **{**settings, "seed": 8})
    wc = _saved_weights(c)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def _caption_loss(folder, text: str, prefix: list[int]) -> float:
    from transformers import AutoTokenizer, OPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=False)
    model = OPTForCausalLM.from_pretrained(str(folder)).eval()
    ids = tokenizer(text + "\n").input_ids
    input_ids = torch.tensor([prefix + ids])
    labels = torch.tensor([[-100] * len(prefix) + ids])
    with torch.no_grad():
        return model(input_ids=input_ids, labels=labels).loss.item()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains a model; 600 s is not enough on a loaded 2-core machine
def test_tiny_lm_reads_its_context(tmp_path):
    """The stand-in LLM must say what its prefix names (as a real LLM reads its context):
    pre-trained with content prefixes, a shuffled bag of a caption's tokens makes the caption
    much likelier than random tokens do; pre-trained with random prefixes only, it does not."""
    import random

    from transformers import AutoTokenizer

    from lavis_ext.captions.rules import au_caption
    from lavis_ext.facs import AU_SUBSETS

    rng = random.Random(0)
    lines = [au_caption([a for a in AU_SUBSETS["emotionet"] if rng.random() < 0.3] or [25])
             for _ in range(1000)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    text = "It is a people who raises inner eyebrow, wrinkles nose and drops jaw."
    settings = dict(pretrain_steps=300, corpus=str(corpus), seed=0)
    gaps = {}
    for share in (0.9, 0.0):
        folder = build_tiny_lm(tmp_path / str(share), **settings, content_prefix=share)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=False)
        words = list(dict.fromkeys(i for i in tokenizer(text + "\n").input_ids if i >= 4))
        random.Random(0).shuffle(words)
        rng = random.Random(1)
        noise = [rng.randrange(4, len(tokenizer)) for _ in words]
        gaps[share] = _caption_loss(folder, text, noise) - _caption_loss(folder, text, words)
    assert gaps[0.9] > 0.3, gaps
    assert gaps[0.0] < 0.1, gaps


@pytest.mark.parametrize("layout", ["sharded", "hub"])
def test_llm_folder_loads_without_random_init_and_matches_transformers(tmp_path, layout):
    """load_llm_weights: meta-device build + memory-mapped weights; the same model as
    transformers' from_pretrained, for sharded folders and hub-style keys without "model."."""
    import lavis  # noqa: F401
    from lavis.models.blip2_models.modeling_opt import OPTConfig, OPTForCausalLM

    from lavis_ext.models.llm import load_llm_weights

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       ffn_dim=32, word_embed_proj_dim=16, max_position_embeddings=32)
    reference = OPTForCausalLM(config).eval()
    folder = tmp_path / layout
    if layout == "sharded":
        # .bin shards on both stacks (current transformers writes safetensors by default)
        reference.save_pretrained(str(folder), max_shard_size="10KB", safe_serialization=False)
        assert (folder / "pytorch_model.bin.index.json").exists()
    else:
        folder.mkdir()
        config.save_pretrained(str(folder))
        torch.save(reference.model.state_dict(), folder / "pytorch_model.bin")  # "decoder.*"
    model = load_llm_weights(folder, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    ids = torch.tensor([[2, 5, 9, 11]])
    expected = reference.to(torch.bfloat16)(input_ids=ids).logits
    assert torch.equal(model(input_ids=ids).logits, expected)
    (folder / ("pytorch_model.bin" if layout == "hub" else "pytorch_model.bin.index.json")
     ).unlink()
    with pytest.raises(Exception, match="holds no weights"):
        load_llm_weights(folder, torch.bfloat16)


def test_lavis_cpu_loader_keeps_a_half_llm(tmp_path, monkeypatch):
    """LAVIS's load_model_and_preprocess calls model.float() on CPU; a bf16 LLM stays bf16
    (OPT-6.7B in fp32 needs 27 GB), and everything else becomes float32 as LAVIS intends."""
    import lavis  # noqa: F401  (registers lavis_ext's models)
    from lavis.models import load_model_and_preprocess
    from omegaconf import OmegaConf

    from lavis_ext.models.exp_blip import ExpBlip

    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny"))
    cfg.model.llm_dtype = "bfloat16"
    path = tmp_path / "exp_blip_tiny_bf16.yaml"
    OmegaConf.save(cfg, path)
    monkeypatch.setitem(ExpBlip.PRETRAINED_MODEL_CONFIG_DICT, "tiny_bf16", str(path))
    model, vis, _ = load_model_and_preprocess("exp_blip", "tiny_bf16", is_eval=True)
    assert {p.dtype for p in model.opt_model.parameters()} == {torch.bfloat16}
    others = [p for n, p in model.named_parameters() if not n.startswith("opt_model.")]
    assert others and {p.dtype for p in others} == {torch.float32}
    model.llm_dtype = torch.float32  # what llm_dtype: float32 gives
    model.float()
    assert {p.dtype for p in model.opt_model.parameters()} == {torch.float32}


def _tiny_eva(**overrides):
    from omegaconf import OmegaConf

    from lavis_ext.models.exp_blip import ExpBlip

    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny_eva")).model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return ExpBlip.from_config(cfg)


def test_frozen_half_vit_runs_in_the_llm_dtype_on_cpu(caplog, monkeypatch):
    """vit_precision: fp16 with a frozen encoder and a bf16 LLM, for a CPU model: the encoder
    is bf16 (ViT-G: 2 GB instead of 4) even on a CUDA host (faked here), LAVIS's CPU float()
    keeps it so, and its features match the float32 encoder's; a trained encoder stays
    float32. The same config for a CUDA model gets LAVIS's fp16 encoder."""
    import lavis  # noqa: F401  (registers lavis_ext's models)

    # Built before the host is faked: the tiny LM's one-off pre-training (cached) runs an
    # optimizer, which asks a "CUDA host" for its current stream.
    full = _tiny_eva(vit_precision="fp32", freeze_vit=True, llm_dtype="float32").eval()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = _tiny_eva(vit_precision="fp16", freeze_vit=True, llm_dtype="bfloat16",
                     device="cuda")
    assert {p.dtype for p in cuda.visual_encoder.parameters()} == {torch.float16}
    assert {p.dtype for p in cuda.opt_model.parameters()} == {torch.bfloat16}
    torch.manual_seed(0)
    half = _tiny_eva(vit_precision="fp16", freeze_vit=True, llm_dtype="bfloat16").eval()
    assert {p.dtype for p in half.visual_encoder.parameters()} == {torch.bfloat16}
    half.float()  # what load_model_and_preprocess does on CPU
    assert {p.dtype for p in half.visual_encoder.parameters()} == {torch.bfloat16}
    assert half.query_tokens.dtype == torch.float32
    full.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    image = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        got = half._llm_prefix(image).float()
        want = full._llm_prefix(image)
    assert torch.allclose(got, want, rtol=0.1, atol=0.1 * want.abs().mean().item())
    assert len(half.generate({"image": image}, num_beams=3, max_length=5)) == 2
    with caplog.at_level("WARNING"):
        trained = _tiny_eva(vit_precision="fp16", freeze_vit=False, llm_dtype="bfloat16")
    assert {p.dtype for p in trained.visual_encoder.parameters()} == {torch.float32}
    assert "stay float32" in caplog.text
