"""How the command-line tools report errors: a user's mistake is one line, a bug a traceback.

Every ``tools/*.py`` runs its ``main`` through :func:`run_tool`. What counts as the user's
mistake (:data:`USER_ERRORS`) is what detkit raises about its input, and says how to fix:

- ``ValueError``: bad arguments, settings or file contents (the data layer names the file and
  the entry: ``val.json: annotation #12 has bbox ...``), a checkpoint that does not fit;
- ``OSError``: missing, unreadable or undecodable files (``FileNotFoundError``,
  ``PermissionError``, the data layer's ``UnreadableImageError``), a full disk, no network;
- ``argparse.ArgumentError`` (jsonargparse's too) and :class:`UsageError` (a ValueError, from
  :class:`ToolArgumentParser`): unknown options, values of the wrong type;
- ``NonFiniteLossError``: training diverged (the message names the step and the good checkpoint);
- ``torch.cuda.OutOfMemoryError``: the batch or the images are too large for the device;
- Lightning's ``MisconfigurationException``: Trainer settings this machine cannot run (no GPU).

Anything else (``TypeError``, ``KeyError``, ``AttributeError``, other ``RuntimeError`` ...) is a
bug in detkit or in a library: its traceback is printed, with a line that says so. ``--debug``
on any tool's command line, or ``DETKIT_DEBUG=1``, shows the full traceback of every error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

DEBUG_FLAG = "--debug"
DEBUG_ENV = "DETKIT_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (or set {DEBUG_ENV}=1)"

# torch.utils.data re-raises a worker's exception with the worker's traceback in the message
_WORKER_TRACEBACK = re.compile(r"\nOriginal Traceback \(most recent call last\):\n", re.M)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or infinite loss or gradient (``nonfinite="stop"``, or too many steps
    skipped in a row), or a checkpoint was about to hold one. Raised before the optimizer step, so
    the weights and every checkpoint written are finite. (Defined here, with the other errors a
    tool reports in one line, so that importing this module stays light.)"""


class UsageError(ValueError):
    """A command line that a tool's parser refuses."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, argparse.ArgumentError, NonFiniteLossError)
"""The user's mistakes; with torch loaded, also ``torch.cuda.OutOfMemoryError``
(:func:`user_errors`). This module does not import torch, so a tool's ``--help`` is instant."""


def user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS`, plus CUDA's out-of-memory error once torch is loaded and Lightning's
    ``MisconfigurationException`` once Lightning is (e.g. ``--trainer.accelerator gpu`` on a
    machine without one); before they are loaded, nothing could have raised them."""
    errors = USER_ERRORS
    if (torch := sys.modules.get("torch")) is not None:
        errors += (torch.cuda.OutOfMemoryError,)
    if (lightning := sys.modules.get("lightning.fabric.utilities.exceptions")) is not None:
        errors += (lightning.MisconfigurationException,)
    return errors


class ToolArgumentParser(argparse.ArgumentParser):
    """The argparse parser of a tool: a refused command line raises :class:`UsageError` (one
    line through :func:`run_tool`) instead of printing the whole usage and exiting, and
    ``--help`` lists ``--debug`` (which :func:`run_tool` takes off the command line before the
    parser sees it; it adds no attribute to the parsed arguments, which tools pass on as
    keyword arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS,
                          help=DEBUG_HELP)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def one_line(error: BaseException) -> str:
    """The error's message on one line: a DataLoader worker's traceback dropped (its last line
    kept), runs of whitespace and newlines joined by single spaces."""
    message = str(error)
    if isinstance(error, KeyError) and error.args:  # str(KeyError) quotes its argument
        message = str(error.args[0])
    if _WORKER_TRACEBACK.search(message):
        last = message.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split()) or type(error).__name__


def run_tool(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, *,
             prog: str | None = None) -> int:
    """Run a tool's ``main(argv)`` and turn its errors into an exit status: ``main``'s own if it
    returns an int (else 0), 2 for the user's mistakes (one line on stderr: ``prog: error:
    message``), 1 for bugs (the traceback and a line saying it is a bug), 130 when interrupted.
    ``--debug`` (removed from ``argv``) or ``DETKIT_DEBUG=1`` lets every exception through with
    its traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name
    if debug_requested(args):
        return _status(main([a for a in args if a != DEBUG_FLAG]))
    try:
        result = main(args)
    except user_errors() as error:
        usage = isinstance(error, UsageError | argparse.ArgumentError)
        hint = "" if usage else f" ({DEBUG_FLAG} shows the traceback)"
        print(f"{prog}: error: {one_line(error)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        traceback.print_exc()
        print(f"{prog}: internal error ({type(error).__name__}): this is a bug in detkit or a "
              "library it uses, not a problem with your input; please report it with the "
              "traceback above", file=sys.stderr)
        return 1
    return _status(result)


def _status(result: Any) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
