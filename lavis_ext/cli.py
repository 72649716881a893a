"""`expblip` command line: thin argument parsing; each subcommand lives in its own module.

Every module named below exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their subcommand runs, so `expblip --help` stays fast and `prepare`,
`make-synthetic`, `synthesize` and `evaluate` never import torch or LAVIS.

One contract for every subcommand (the table ``EXIT_CODES`` below, first match wins): bad
input the user can fix prints ``expblip <command>: error: <what and where>`` on stderr and
exits 2. Bad input is what argparse refuses, an ``errors.UsageError`` (a flag or option) or
``errors.InputError`` (a file, record or config value; the data layer's ``RecordError`` and
``DatasetFormatError`` are ones), and a missing file or folder. Anything else raised while a
subcommand runs, a plain ``ValueError`` or ``KeyError`` from lavis_ext's own code included,
is a runtime failure or a bug: exit 1 with the same prefix, the exception's type, and a hint
to rerun with ``--debug``. A batch where every item failed exits 3; tracebacks are shown only
with ``--debug`` (or ``EXPBLIP_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any, Callable

from lavis_ext import errors

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("lavis_ext.data.prepare", "read a dataset's native files into records"),
    "make-synthetic": ("lavis_ext.data.synthetic.cli",
                       "write a synthetic dataset in a dataset's native layout"),
    "synthesize": ("lavis_ext.captions.synthesize", "add rule or LLM captions to records"),
    "import-captions": ("lavis_ext.captions.importer",
                        "attach captions from a LAVIS caption file (e.g. the released ones)"),
    "evaluate": ("lavis_ext.metrics.evaluate", "score captions against reference records"),
    "pseudo-caption": ("lavis_ext.method.pseudo_caption",
                       "caption records with a trained AU-BLIP or Emot-BLIP"),
    "describe": ("lavis_ext.describe.cli", "describe the faces in photos or videos"),
    "explain": ("lavis_ext.describe.explain",
                "where the captioner looks: Q-Former attention maps over the face, the AU "
                "regions its caption names, ATT-COS"),
    "serve": ("lavis_ext.serve.cli", "an HTTP API and web page that describe uploaded faces"),
    "rate": ("lavis_ext.rate.cli",
             "a web page where people rate models' captions blind (Table 5); --report"),
    "pipeline": ("lavis_ext.method.paper",
                 "the paper's three stages on prepared datasets, from one YAML file"),
    "demo": ("lavis_ext.method.demo", "run the whole method on synthetic faces, on CPU"),
    "export-hf": ("lavis_ext.export.cli",
                  "write a trained captioner as a transformers BLIP-2 folder (vLLM-servable)"),
    "weights": ("lavis_ext.models.weights",
                "show where each pretrained part (EVA ViT-G, BLIP-2, BERT, OPT, ...) is found; "
                "--fetch downloads the missing ones"),
}

EPILOG = f"""exit codes: {errors.EXIT_OK} done; {errors.EXIT_FAILURE} runtime failure or bug; \
{errors.EXIT_USAGE} bad input (flags, files, config); {errors.EXIT_NOTHING_DONE} every item \
failed; {errors.EXIT_INTERRUPTED} interrupted; {errors.EXIT_BROKEN_PIPE} output pipe closed.
Errors read 'expblip COMMAND: error: ...' on stderr; --debug (or EXPBLIP_DEBUG=1) adds the
traceback."""


def _describe_missing(err: BaseException) -> str:
    name = getattr(err, "filename", None)
    return f"not found: {name}" if name else str(err)


def _called_process(err: Any) -> str:
    command = err.cmd if isinstance(err.cmd, str) else " ".join(map(str, err.cmd))
    return f"a subprocess failed with exit status {err.returncode}: {command}"


# Ordered: the first entry whose class matches wins, so subclasses come before their bases.
# A class is named as "module:Name" when importing its module here would make the CLI heavy;
# it is looked up only if that module is already imported (otherwise nothing can raise it).
# Each entry: class, exit code, message (None: str(err)).
EXIT_CODES: list[tuple[type | str, int, Callable[[BaseException], str] | None]] = [
    (errors.ExpBlipError, -1, None),  # -1: the error's own exit_code
    (KeyboardInterrupt, errors.EXIT_INTERRUPTED, lambda _: "interrupted"),
    ("lavis_ext.captions.client:FatalLLMError", errors.EXIT_FAILURE, None),
    (FileNotFoundError, errors.EXIT_USAGE, _describe_missing),
    (NotADirectoryError, errors.EXIT_USAGE, _describe_missing),
    (IsADirectoryError, errors.EXIT_USAGE, lambda e: f"a folder, not a file: {e.filename}"),
    ("subprocess:CalledProcessError", errors.EXIT_FAILURE, _called_process),
    (Exception, errors.EXIT_FAILURE, lambda e: f"{type(e).__name__}: {e}"),
]


def _resolve(entry: type | str) -> type | None:
    if isinstance(entry, type):
        return entry
    module, _, name = entry.partition(":")
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def classify(err: BaseException) -> tuple[int, str]:
    """The exit code and message for an exception, from ``EXIT_CODES``."""
    for entry, code, message in EXIT_CODES:
        cls = _resolve(entry)
        if cls is not None and isinstance(err, cls):
            if code == -1:
                code = err.exit_code  # type: ignore[attr-defined]
            return code, (message or str)(err)
    raise err  # a BaseException outside the table (e.g. GeneratorExit): not ours to map


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expblip",
                                     description="Exp-BLIP: facial-expression captioning with "
                                                 "LAVIS (data, captions, training, evaluation)",
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    debug_help = "show the traceback of an error (also EXPBLIP_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(subparsers=sub.choices)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help=debug_help)
        if name == only:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


DEBUG_HINT = "(rerun with --debug, or EXPBLIP_DEBUG=1, for the traceback)"


def _report(command: str | None, code: int, message: str, debug: bool = False) -> None:
    prefix = f"expblip {command}" if command else "expblip"
    print(f"{prefix}: error: {message}", file=sys.stderr)
    if code == errors.EXIT_FAILURE and not debug:
        print(f"{prefix}: {DEBUG_HINT}", file=sys.stderr)


def _quiet_broken_pipe() -> int:
    # Python flushes stdout at exit and would fail again: point it at /dev/null first.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return errors.EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    debug = "--debug" in argv or os.environ.get("EXPBLIP_DEBUG", "") not in ("", "0")
    try:
        args, unknown = build_parser(command).parse_known_args(argv)
        if unknown:  # say it under the subcommand's name, like its other usage errors
            args.subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)
    except SystemExit as exit_:
        # argparse (usage errors, --help) exits with an int; a string is a message to show.
        if isinstance(exit_.code, str):
            _report(command, errors.EXIT_USAGE, exit_.code)
            return errors.EXIT_USAGE
        return int(exit_.code or 0)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except BaseException as err:  # noqa: BLE001  (mapped by the table, or re-raised)
        code, message = classify(err)
        if debug:
            traceback.print_exc()
        _report(command, code, message, debug)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
