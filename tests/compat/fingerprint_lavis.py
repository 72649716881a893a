"""Fingerprint every function and class of the imported ``lavis.*`` modules (a child process).

    python fingerprint_lavis.py plugin OUT.json   # import lavis_ext, use it, fingerprint
    python fingerprint_lavis.py stock OUT.json    # LAVIS alone, with STOCK_IMPORTS

A fingerprint holds, per ``module:name`` (and ``module:Class.member`` for classes defined
there): for functions the code (bytecode, constants, names, recursively), defaults and
keyword defaults; for classes their bases; for properties and static/class methods their
functions; for module references (``torch``, ``dist``) and foreign classes (``DataLoader``)
what they are. Values other than simple constants count by type only (registries fill up).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_SIMPLE = (int, float, str, bool, bytes, type(None))
# What the LAVIS-alone process imports: `import lavis` and the modules the plugin's use reaches
# beyond it (the test checks that the plugin's process imported no other lavis module).
STOCK_IMPORTS = ("lavis", "lavis.common.optims", "lavis.runners", "lavis.runners.runner_base",
                 "lavis.runners.runner_iter", "lavis.datasets.datasets.dataloader_utils")


def _code(code: types.CodeType) -> str:
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode(),
             repr(code.co_freevars).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code(const).encode())
        elif isinstance(const, frozenset):  # its repr's order depends on the hash seed
            parts.append(repr(sorted(map(repr, const))).encode())
        else:
            parts.append(repr(const).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _value(value: Any) -> Any:
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, (tuple, list, frozenset)) and all(isinstance(v, _SIMPLE) for v in value):
        return repr(value)
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    if isinstance(value, types.FunctionType):
        return f"function {value.__module__}.{value.__qualname__} {_code(value.__code__)}"
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return repr(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _callable(item: Any) -> Any:
    if isinstance(item, types.FunctionType):
        return {"function": f"{item.__module__}.{item.__qualname__}", "code": _code(item.__code__),
                "defaults": _value(item.__defaults__),
                "kwdefaults": {k: _value(v) for k, v in sorted((item.__kwdefaults__ or {}).items())}}
    if isinstance(item, (staticmethod, classmethod)):
        return {type(item).__name__: _callable(item.__func__)}
    if isinstance(item, property):
        return {"property": [_callable(f) for f in (item.fget, item.fset, item.fdel)]}
    if isinstance(item, types.ModuleType):
        return {"module": item.__name__, "kind": type(item).__qualname__}
    if isinstance(item, type):
        return {"class": f"{item.__module__}.{item.__qualname__}"}
    if isinstance(item, types.MethodType):
        return {"method": _callable(item.__func__), "of": _value(item.__self__)}
    if callable(item):
        return {"callable": f"{type(item).__module__}.{type(item).__qualname__}",
                "name": str(getattr(item, "__qualname__", ""))}
    return {"value": _value(item)}


def _class(cls: type, key: str, out: dict[str, Any], depth: int = 0) -> None:
    out[f"{key}.__bases__"] = [f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__]
    for name, member in vars(cls).items():
        if name in ("__dict__", "__weakref__", "__doc__", "_abc_impl", "__parameters__"):
            continue
        out[f"{key}.{name}"] = _callable(member)
        if isinstance(member, type) and member.__qualname__ == f"{cls.__qualname__}.{name}" and depth < 2:
            _class(member, f"{key}.{name}", out, depth + 1)


def fingerprint() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for module_name in sorted(m for m in list(sys.modules) if m == "lavis" or m.startswith("lavis.")):
        module = sys.modules[module_name]
        if module is None:
            continue
        for name, item in list(vars(module).items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            key = f"{module_name}:{name}"
            out[key] = _callable(item)
            if isinstance(item, type) and item.__module__ == module_name and item.__qualname__ == name:
                _class(item, key, out)
    return out


def use_the_plugin(folder: Path) -> dict[str, Any]:
    """Import lavis_ext, build and run the tiny Exp-BLIP (both stages) and train with a runner."""
    sys.path[:0] = [str(HERE.parents[1]), str(HERE)]
    import torch

    import lavis_ext  # noqa: F401
    import lavis  # noqa: F401
    from lavis.common.registry import registry
    from lavis.models import load_model_and_preprocess
    from omegaconf import OmegaConf

    import compat_toy
    import train

    torch.manual_seed(0)
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    model, _, _ = load_model_and_preprocess("exp_blip", "tiny", is_eval=True)
    captions = model.generate({"image": images}, num_beams=2, max_length=8)
    stage1_cls = registry.get_model_class("exp_blip_qformer")
    stage1 = stage1_cls.from_config(OmegaConf.load(stage1_cls.default_config_path("tiny")).model)
    loss = float(stage1({"image": images, "text_input": ["A smile.", "A frown."]}).loss)
    cfg = compat_toy.write_run_config(folder, run={"max_epoch": 1})
    runner = train.build_runner(train.parse_args(["--cfg-path", str(cfg)]))
    runner.train()
    return {"captions": len(captions), "stage1_loss": loss, "runner": type(runner).__name__}


def main(argv: list[str]) -> int:
    mode, out_path = argv[0], Path(argv[1])
    report: dict[str, Any] = {}
    if mode == "plugin":
        report["used"] = use_the_plugin(out_path.parent)
    else:
        import transformers
        if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 46):
            # What compat.PROVIDES does (into transformers, not LAVIS): LAVIS cannot be
            # imported on current transformers without these three names.
            import transformers.modeling_utils as modeling_utils
            import transformers.pytorch_utils as pytorch_utils

            for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
                setattr(modeling_utils, name, getattr(pytorch_utils, name))
        for name in STOCK_IMPORTS:
            importlib.import_module(name)
    report["modules"] = sorted(m for m in sys.modules if m == "lavis" or m.startswith("lavis."))
    report["fingerprint"] = fingerprint()
    out_path.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
