"""The frozen LLM and its tokenizer: from a local folder, the HF cache or the hub (through the
weight resolver), a tiny LM built locally, or a random-init full-size OPT for timing.

LLM values (``model.llm_model``, or its older name ``model.opt_model``): a local folder; a hub
name (``facebook/opt-2.7b`` and ``facebook/opt-6.7b`` are manifest parts:
``$LAVIS_EXT_OPT_2_7B`` / ``$LAVIS_EXT_OPT_6_7B``, the HF cache, then a download unless
offline; any other hub name goes through the Hugging Face cache and download); ``tiny`` (built
locally, see tiny_lm.py; ``tiny_lm.family`` picks OPT, Llama or Qwen2); ``random:opt-2.7b`` /
``random:opt-6.7b`` (no weights). OPT loads as the plugin's ``ExpBlipOPTForCausalLM``
(models/opt.py: LAVIS's own class, which takes ``query_embeds``, with a KV cache on every
stack; the same module names, so checkpoints keep their ``opt_model.*`` keys); every other
architecture as transformers' ``AutoModelForCausalLM`` (llm_family.py), which needs
transformers >= 4.46 (the current stack).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from lavis_ext.errors import InputError
from lavis_ext.models import precision
from lavis_ext.models.paths import MissingModelFileError

OPT_SHAPES: dict[str, dict[str, int]] = {
    "opt-2.7b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                     ffn_dim=10240, word_embed_proj_dim=2560),
    "opt-6.7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                     ffn_dim=16384, word_embed_proj_dim=4096),
}
OPT_VOCAB = 50272


# The generic (inputs_embeds) path needs decoder-only ``generate(inputs_embeds=...)`` that
# expands the embeddings for beams itself, and the Llama/Qwen2/Mistral classes: the current
# stack. transformers 4.26 (the paper stack) has neither.
GENERIC_MIN_TRANSFORMERS = "4.46"
LLM_KEYS = ("llm_model", "opt_model")


def choose_llm_model(opt_model: str | None, llm_model: str | None,
                     default: str | None = None) -> str | None:
    """One LLM from the two names of the key (``llm_model``; ``opt_model``, its older name).

    Both may be present after LAVIS merges a project config over the model type's defaults:
    then the one still at the model type's ``default`` gives way to the one the project set.
    Two different values, neither of them the default, are an error.
    """
    if not opt_model or not llm_model or opt_model == llm_model:
        return llm_model or opt_model
    if default is not None and opt_model == default:
        return llm_model
    if default is not None and llm_model == default:
        return opt_model
    raise InputError(f"model.llm_model ('{llm_model}') and model.opt_model ('{opt_model}') name "
                     "different LLMs: give one of them (model.opt_model is the older name of "
                     "model.llm_model)")


def estimate_parameters(config: Any) -> int:
    """Parameters of an LLM config, without building it: OPT by its formula (embeddings +
    decoder blocks), other architectures counted on the meta device (no memory)."""
    if getattr(config, "model_type", "opt") == "opt":
        d, ffn, layers = config.hidden_size, config.ffn_dim, config.num_hidden_layers
        embed = (config.vocab_size * config.word_embed_proj_dim
                 + config.max_position_embeddings * d)
        return embed + layers * (4 * d * d + 2 * d * ffn)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen: set[int] = set()
    total = 0
    for param in model.parameters():  # tied weights (Qwen2's lm_head) once
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def resolve_llm_dtype(name: str | None, device: str | torch.device,
                      parameters: int | None = None) -> torch.dtype:
    """``model.llm_dtype`` for the device the model will run on (``lavis_ext.models.precision``:
    one dtype table; ``auto`` follows the target device, not this machine's GPUs)."""
    return precision.llm_dtype(name, device, parameters)


def llm_source(opt_model: str | None) -> str:
    """A local folder for a hub name or folder (manifest parts through the resolver)."""
    from lavis_ext.models.weights import HUB_PARTS, resolve

    if not opt_model:
        raise MissingModelFileError("model.llm_model (or model.opt_model) is not set: give a "
                                    "local model folder, a hub name, 'tiny' or "
                                    "'random:opt-2.7b'.")
    if opt_model in HUB_PARTS:
        return resolve(HUB_PARTS[opt_model].name, opt_model)
    if os.path.isdir(os.path.expanduser(opt_model)):
        return os.path.expanduser(opt_model)
    if opt_model.startswith((".", "/", "~")) or opt_model.count("/") > 1:
        raise MissingModelFileError(f"LLM folder '{opt_model}' does not exist. Set "
                                    "model.llm_model (or model.opt_model) to a local model "
                                    "folder (config.json, weights, tokenizer).")
    return opt_model  # another hub name: transformers' own cache and download


def require_generic_support(model_type: str, name: str) -> None:
    """Raise a clear error when this transformers cannot run ``model_type`` through the
    generic inputs_embeds path."""
    import transformers
    from packaging.version import Version
    from transformers import CONFIG_MAPPING

    version = transformers.__version__
    if Version(version) < Version(GENERIC_MIN_TRANSFORMERS) or model_type not in CONFIG_MAPPING:
        raise InputError(
            f"model.llm_model '{name}' is a '{model_type}' model; LLMs other than OPT need "
            f"transformers >= {GENERIC_MIN_TRANSFORMERS} with that architecture, and this is "
            f"transformers {version}: use the current stack (run_scripts/setup_env.sh "
            "--stack current), or an OPT model on the paper stack")


def _folder_config(folder: str | os.PathLike) -> Any:
    """An LLM folder's config: LAVIS's OPTConfig for OPT, transformers' AutoConfig otherwise."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise MissingModelFileError(f"LLM folder '{folder}' has no config.json")
    model_type = json.loads(path.read_text()).get("model_type", "")
    if model_type == "opt":
        from lavis.models.blip2_models.modeling_opt import OPTConfig

        return OPTConfig.from_pretrained(str(folder))
    require_generic_support(model_type, str(folder))
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


def _hub_config(name: str) -> Any:
    """The config of a hub name outside the manifest: its config.json from the Hugging Face
    cache, else downloaded (unless offline)."""
    from huggingface_hub import hf_hub_download

    from lavis_ext.models.weights import offline

    try:
        path = hf_hub_download(name, "config.json", local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here means "not cached"
        if offline():
            raise MissingModelFileError(
                f"model.llm_model: '{name}' is not in the Hugging Face cache and the hub is off "
                "(offline mode); download it first or give a local model folder") from None
        try:
            path = hf_hub_download(name, "config.json")
        except Exception as err:  # noqa: BLE001 - hub errors are many
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MissingModelFileError(f"model.llm_model: '{name}' could not be loaded "
                                        f"({first}); give a local model folder") from None
    return _folder_config(Path(path).parent)


def hub_folder(name: str) -> str:
    """A local snapshot of a hub LLM outside the manifest (config, tokenizer, safetensors
    weights; .bin only where a repository has no safetensors), from the Hugging Face cache or
    a download; offline and absent is a clear error."""
    from huggingface_hub import snapshot_download

    from lavis_ext.models.weights import offline

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]

    def fetch(local_only: bool, extra: tuple[str, ...] = ()) -> str | None:
        try:
            folder = snapshot_download(name, local_files_only=local_only,
                                       allow_patterns=patterns + list(extra))
        except Exception as err:  # noqa: BLE001 - hub errors are many; all mean "not here"
            if local_only:
                return None
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MissingModelFileError(f"model.llm_model: '{name}' could not be downloaded "
                                        f"({first}); give a local model folder") from None
        try:
            weight_files(folder)
        except MissingModelFileError:
            return None
        return folder

    folder = fetch(True) or fetch(True, ("*.bin",))
    if folder:
        return folder
    if offline():
        raise MissingModelFileError(
            f"model.llm_model: '{name}' is not in the Hugging Face cache and the hub is off "
            "(offline mode); download it first or give a local model folder")
    folder = fetch(False) or fetch(False, ("*.bin",))
    if not folder:
        raise MissingModelFileError(f"model.llm_model: the hub repository '{name}' holds no "
                                    "weights (safetensors or .bin)")
    return folder


def llm_config(opt_model: str, tiny_lm: dict[str, Any] | None = None) -> Any:
    """The config that ``load_llm`` will build, read without loading weights."""
    from lavis.models.blip2_models.modeling_opt import OPTConfig

    from lavis_ext.models.tiny_lm import tiny_lm_dir

    if opt_model == "tiny":
        return _folder_config(tiny_lm_dir(**(tiny_lm or {})))
    if opt_model.startswith("random:"):
        shape = opt_model.split(":", 1)[1]
        if shape not in OPT_SHAPES:
            raise InputError(f"model.opt_model: unknown architecture {shape!r}; known: "
                             f"{sorted(OPT_SHAPES)}")
        return OPTConfig(vocab_size=OPT_VOCAB, max_position_embeddings=2048, pad_token_id=1,
                         bos_token_id=2, eos_token_id=2, **OPT_SHAPES[shape])
    source = llm_source(opt_model)
    return _folder_config(source) if os.path.isdir(source) else _hub_config(source)


def _from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """from_pretrained on a folder, or a hub name from the cache first; clear error if absent."""
    from lavis_ext.models.weights import offline

    if os.path.isdir(name):
        return cls.from_pretrained(name, **kwargs)
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        if offline():
            raise MissingModelFileError(
                f"LLM '{name}' is not in the Hugging Face cache and the hub is off (offline "
                "mode). Set model.opt_model to a local OPT folder.") from None
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingModelFileError(f"LLM '{name}' could not be loaded ({first}). Set "
                                    "model.opt_model to a local OPT folder.") from None


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a Hugging Face model folder (sharded or not; safetensors first)."""
    folder = Path(folder)
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index).is_file():
            names = json.loads((folder / index).read_text())["weight_map"].values()
            return [folder / name for name in sorted(set(names))]
        if (folder / single).is_file():
            return [folder / single]
    raise MissingModelFileError(f"LLM folder '{folder}' holds no weights (model.safetensors or "
                                "pytorch_model.bin, or their sharded index)")


def load_llm_weights(folder: str | os.PathLike, dtype: torch.dtype) -> torch.nn.Module:
    """OPT from a local folder, with peak memory about the model's own size in ``dtype``.

    transformers 4.26 first initialises the whole model randomly and then reads each shard
    fully into memory (OPT-6.7B's first shard is ~10 GB) beside it: 13.4 GB of bf16 weights +
    10 GB cannot sit beside ViT-G on a 24 GB machine. Here the model is created on the meta
    device (no random init), allocated once in ``dtype``, and each weight file is
    memory-mapped through the weights-only loader and copied in, tensor by tensor.
    """
    from lavis.models.blip2_models.modeling_opt import OPTConfig

    from lavis_ext.models.opt import ExpBlipOPTForCausalLM

    config = OPTConfig.from_pretrained(str(folder))
    files = weight_files(folder)
    with torch.device("meta"):  # no memory, no initialisers run; the dtype set per tensor
        model = ExpBlipOPTForCausalLM(config).to(dtype)
    return _fill_weights(model.to_empty(device="cpu"), folder, files)


def load_causal_lm_weights(folder: str | os.PathLike, dtype: torch.dtype,
                           config: Any = None) -> torch.nn.Module:
    """Any ``AutoModelForCausalLM`` from a local folder (current stack), through transformers'
    own loader: the parameters are created on the meta device with the initialisers off (its
    ``no_init_weights`` / ``init_empty_weights``; buffers such as the rotary frequencies are
    computed as usual), then filled from the memory-mapped weight files in ``dtype``, so the
    peak is about the model's own size and this module changes no process-global state.
    """
    from transformers import AutoModelForCausalLM

    config = config if config is not None else _folder_config(folder)
    weight_files(folder)  # no weights: the plugin's error naming the folder, before transformers'
    return AutoModelForCausalLM.from_pretrained(str(folder), config=config,
                                                **{_dtype_kwarg(): dtype})


def _tensors(file: Path) -> Any:
    """(name, tensor) pairs of a weight file, one tensor in memory at a time: safetensors read
    tensor by tensor (``load_file`` would read the whole file at once), torch files
    memory-mapped through the weights-only loader."""
    if str(file).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                yield key, handle.get_tensor(key)
        return
    from lavis_ext.models.checkpoint import load_weights_file

    yield from load_weights_file(file).items()


def _dtype_kwarg() -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _fill_weights(model: torch.nn.Module, folder: str | os.PathLike,
                  files: list[Path]) -> torch.nn.Module:
    """Copy every tensor of ``files`` into ``model`` (hub files may omit the "model." prefix);
    every weight must be filled, by a file or by tying to a filled one."""
    own = model.state_dict()
    filled: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for file in files:
            for key, value in _tensors(file):
                name = key if key in own else f"model.{key}"
                if name not in own:
                    unexpected.append(key)
                    continue
                if own[name].shape != value.shape:
                    raise InputError(f"{file}: {key} has shape {tuple(value.shape)}, the model "
                                     f"{tuple(own[name].shape)}")
                own[name].copy_(value)
                filled.add(name)
    model.tie_weights()
    own = model.state_dict()
    storage = {own[k].data_ptr() for k in filled}
    missing = [k for k in own if k not in filled and own[k].data_ptr() not in storage]
    if missing:
        raise MissingModelFileError(f"LLM folder '{folder}': weights missing for {len(missing)} "
                                    f"tensors, e.g. {missing[:5]}")
    if unexpected:
        logging.info("LLM folder %s: %d tensors not used: %s", folder, len(unexpected),
                     unexpected[:5])
    return model.eval()


def cover_vocabulary(tokenizer: Any, vocab_size: int) -> Any:
    """Give a byte-level BPE tokenizer an entry for every id below ``vocab_size``.

    A random-init LLM emits any id of its vocabulary; ids its tokenizer lacks decode to None
    and crash ``batch_decode``. The filler entries (``<unused_N>``) are never produced by
    tokenizing, only by decoding such ids.
    """
    if not hasattr(tokenizer, "encoder") or not hasattr(tokenizer, "decoder"):
        raise TypeError(f"cannot extend {type(tokenizer).__name__}: a slow byte-level BPE "
                        "tokenizer (GPT2Tokenizer) is needed")
    for index in range(vocab_size):
        if index not in tokenizer.decoder and index not in tokenizer.added_tokens_decoder:
            token = f"<unused_{index}>"
            tokenizer.encoder[token] = index
            tokenizer.decoder[index] = token
    # transformers 4.34 and later cache len(tokenizer), recounted only when tokens are added
    # through add_tokens; recount after filling the vocabulary directly.
    recount = getattr(tokenizer, "_update_total_vocab_size", None)
    if recount is not None:
        recount()
    return tokenizer


def _random_llm_tokenizer(config: Any, tiny_lm: dict[str, Any] | None) -> Any:
    """The real OPT tokenizer when the HF cache has one, else the tiny LM's; either extended
    to the model's vocabulary."""
    from transformers import AutoTokenizer

    from lavis_ext.models.tiny_lm import tiny_lm_dir

    tokenizer = None
    for hub_id in ("facebook/opt-2.7b", "facebook/opt-6.7b"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(hub_id, use_fast=False,
                                                      local_files_only=True)
            break
        except (OSError, ValueError):
            continue
    if tokenizer is None:
        folder = str(tiny_lm_dir(**{**(tiny_lm or {}), "pretrain_steps": 0}))
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
        logging.info("random LLM: the tiny LM's tokenizer (%d tokens), extended to the model's "
                     "%d ids", len(tokenizer), config.vocab_size)
    return cover_vocabulary(tokenizer, config.vocab_size)


def random_opt(config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The plugin's OPT with freshly initialised weights, allocated once, in ``dtype``.

    Built on the meta device and materialised in ``dtype`` so that OPT-6.7B never exists in
    float32 (27 GB on a 24 GB machine) and no process-wide default dtype is changed: each
    module's own ``reset_parameters`` (LayerNorm ones and zeros), then OPT's ``_init_weights``
    (normal, std ``init_std``), as construction would have done.
    """
    from lavis_ext.models.opt import ExpBlipOPTForCausalLM as OPTForCausalLM

    with torch.device("meta"):
        model = OPTForCausalLM(config)
    model = model.to(dtype).to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        model.apply(model._init_weights)
    model.tie_weights()
    return model


def load_llm(opt_model: str, dtype: torch.dtype, tiny_lm: dict[str, Any] | None = None,
             config: Any = None) -> tuple[Any, torch.nn.Module]:
    """Return (tokenizer, model): the plugin's OPT (LAVIS's class, which accepts
    query_embeds, with a working KV cache) for OPT, transformers' AutoModelForCausalLM for
    every other architecture (llm_family.py)."""
    from transformers import AutoTokenizer

    from lavis_ext.models.opt import ExpBlipOPTForCausalLM as OPTForCausalLM
    from lavis_ext.models.tiny_lm import tiny_lm_dir

    if not opt_model:
        llm_source(opt_model)  # raises the error naming the key
    if opt_model.startswith("random:"):
        config = config or llm_config(opt_model, tiny_lm)
        tokenizer = _random_llm_tokenizer(config, tiny_lm)
        return tokenizer, random_opt(config, dtype)
    config = config or llm_config(opt_model, tiny_lm)
    if opt_model == "tiny":
        source = str(tiny_lm_dir(**(tiny_lm or {})))
    else:
        source = llm_source(opt_model)
    if config.model_type != "opt":
        from lavis_ext.models.llm_family import CAUSAL

        folder = source if os.path.isdir(source) else hub_folder(source)
        tokenizer = CAUSAL.prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
        return tokenizer, load_causal_lm_weights(folder, dtype, config)
    if opt_model == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=False)
        model = OPTForCausalLM.from_pretrained(source, torch_dtype=dtype)
    else:
        tokenizer = _from_pretrained(AutoTokenizer, source, use_fast=False)
        if os.path.isdir(source):
            model = load_llm_weights(source, dtype)
        else:  # a hub name outside the manifest: transformers' own cache and download
            model = _from_pretrained(OPTForCausalLM, source, torch_dtype=dtype)
    if not getattr(tokenizer, "add_bos_token", True) and tokenizer.bos_token_id is None:
        logging.warning("LLM tokenizer adds no BOS token: an empty prompt would give empty "
                        "input ids; lavis_ext's generate inserts BOS itself.")
    return tokenizer, model
