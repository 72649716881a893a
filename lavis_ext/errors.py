"""Errors that any layer may raise and that ``expblip`` turns into an exit code and a message.

This module imports nothing, so the plain layers (facs, data, captions, metrics) can raise
these without pulling in the command line. Raise ``UsageError`` (a flag or option) or
``InputError`` (a file, record or config value) for bad input the user can fix: only these
(and argparse's own errors, and a missing user file) exit 2. A plain ``ValueError`` or
``KeyError`` is an internal invariant: `expblip` reports it as a failure (exit 1) with a hint
to rerun with ``--debug``. ``lavis_ext.cli`` maps them (and a few standard
exceptions) to exit codes in one ordered table; see ``EXIT_CODES`` there.
"""
from __future__ import annotations

# Exit codes of every `expblip` subcommand (also listed in `expblip --help`).
EXIT_OK = 0
EXIT_FAILURE = 1          # a runtime failure or a bug (training crashed, an endpoint refused, ...)
EXIT_USAGE = 2            # bad input the user can fix: flags, missing or malformed files, config
EXIT_NOTHING_DONE = 3     # every item failed (no file described, no caption added, ...)
EXIT_INTERRUPTED = 130    # Ctrl-C or SIGTERM (128 + SIGINT)
EXIT_BROKEN_PIPE = 141    # stdout closed early, e.g. `expblip ... | head` (128 + SIGPIPE)


class ExpBlipError(Exception):
    """Base of the errors below; ``exit_code`` is what `expblip` exits with."""

    exit_code = EXIT_FAILURE


class UsageError(ExpBlipError, ValueError):
    """A flag or option value that cannot work (say which flag and what was expected)."""

    exit_code = EXIT_USAGE


class InputError(ExpBlipError, ValueError):
    """An input file or folder that is missing or malformed (say which, and where in it)."""

    exit_code = EXIT_USAGE


class MissingEntryError(InputError, KeyError):
    """A name the user gave (a prompt, rule template, checkpoint entry, ...) that is not there.

    A ``KeyError`` too, for callers that look names up with ``except KeyError``; its message
    reads like the others' (``KeyError`` alone would quote it).
    """

    __str__ = ValueError.__str__


class NothingSucceeded(ExpBlipError):
    """Every item of a batch failed; the message says how many and where the reasons are."""

    exit_code = EXIT_NOTHING_DONE


def check_partial(command: str, succeeded: int, failed: int, what: str = "items") -> int:
    """The exit code for a batch: 0 if anything succeeded, else raise ``NothingSucceeded``.

    Call it after reporting the per-item failures; it adds one summary line on stderr when
    some (but not all) items failed.
    """
    import sys

    if failed and not succeeded:
        raise NothingSucceeded(f"all {failed} {what} failed")
    if failed:
        print(f"expblip {command}: warning: {failed} of {succeeded + failed} {what} failed",
              file=sys.stderr)
    return EXIT_OK
