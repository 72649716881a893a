"""`expblip` command line: thin argument parsing; each subcommand lives in its own module.

Every module named below exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules
are imported only when their subcommand runs, so `expblip --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("lavis_ext.data.prepare", "read a dataset's native files into records"),
    "make-synthetic": ("lavis_ext.data.synthetic.cli",
                       "write a synthetic dataset in a dataset's native layout"),
    "synthesize": ("lavis_ext.captions.synthesize", "add rule or LLM captions to records"),
    "evaluate": ("lavis_ext.metrics.evaluate", "score captions against reference records"),
    "pseudo-caption": ("lavis_ext.pipeline.pseudo_caption",
                       "caption records with a trained AU-BLIP or Emot-BLIP"),
    "describe": ("lavis_ext.pipeline.describe", "describe the faces in photos or videos"),
    "demo": ("lavis_ext.pipeline.demo", "run the whole method on synthetic faces, on CPU"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expblip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
