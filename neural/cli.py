"""``nfr``: the command-line face of Neural Face Rig.

Each command family lives in its own module exposing ``add_commands(subparsers)``; every
command handler returns an exit code. Errors that a user can fix (a bad file, a bad argument)
are printed as one clear line and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

from ..rig.errors import RigError
from ..rig.file_limits import describe_os_error
from .errors import NeuralError

COMMAND_MODULES = ("cli_rig", "cli_generator", "cli_convert", "cli_dfg", "cli_train", "cli_bench",
                   "cli_photo", "cli_capture")
# Development tools the Blender extension's zip leaves out: their commands are simply absent.
OPTIONAL_MODULES = frozenset({"cli_train", "cli_bench"})


def command_modules() -> Iterator[ModuleType]:
    """The command modules present in this installation, in COMMAND_MODULES order."""
    for name in COMMAND_MODULES:
        qualified = f"{__package__}.{name}"
        try:
            yield importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if name not in OPTIONAL_MODULES or exc.name != qualified:
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfr",
        description="Neural Face Rig: face-rig and neural-face tools (Blender not needed).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        module.add_commands(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """The one line a user sees for an error they can fix: the project's own message, or for
    an OS error its file and reason in words (missing file vs missing folder, a folder,
    permission denied), or for exhausted memory what happened. Newlines are folded."""
    if isinstance(exc, OSError) and not isinstance(exc, (RigError, NeuralError)):
        where = exc.filename if exc.filename is not None else "nfr"
        text = f"{where}: {describe_os_error(where, exc)}"
    elif isinstance(exc, MemoryError):
        text = ("ran out of memory (an input asks for more than this machine has: a damaged or "
                "crafted file, or a resolution/batch too large for it)")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RigError, NeuralError, OSError, MemoryError) as exc:
        print(f"nfr: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
