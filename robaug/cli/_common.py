"""What every ``robaug`` command shares: its parser (named ``robaug <command>``, defaults shown, ``--debug``) and
how it ends: a user error prints one line naming the problem and the fix and exits 2 (``--debug`` shows the
traceback); a closed output pipe (``robaug list | head -1``) ends quietly."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Callable, Sequence

__all__ = ["USER_ERRORS", "UsageError", "HelpFormatter", "make_parser", "run_main"]


class UsageError(ValueError):
    """A mistake in the command line that the command itself detects (not a bug)."""


#: exceptions that mean "the input or the environment is wrong", reported in one line. robaug raises ValueError
#: (bad value, with the fix in the message), KeyError (unknown name), OSError (missing file, unwritable folder) and
#: ImportError (optional package not installed).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, ImportError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (unless it is None/False or the help already names it) and keeps the line breaks
    of the description and the examples, wrapping only lines wider than the terminal."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        flag = action.nargs == 0 and isinstance(action.default, bool)  # store_true / store_false
        if action.default is None or action.default is argparse.SUPPRESS or flag or "default" in text.lower():
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            lead = line[:len(line) - len(line.lstrip())]
            wrapped = textwrap.wrap(line.strip(), width, initial_indent=indent + lead,
                                    subsequent_indent=indent + lead + ("  " if lead else ""))
            lines.extend(wrapped or [""])
        return "\n".join(lines)


def make_parser(command: str, description: str, epilog: str | None = None,
                formatter_class: type[argparse.HelpFormatter] = HelpFormatter) -> argparse.ArgumentParser:
    """The parser of ``robaug <command>`` with the shared ``--debug`` and ``--quiet`` options."""
    p = argparse.ArgumentParser(prog=f"robaug {command}", description=description, epilog=epilog,
                                formatter_class=formatter_class)
    add_debug(p)
    add_quiet(p)
    return p


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", default=False,
                   help="no progress bars (ROBAUG_QUIET=1 while the command runs); results still go to stdout")


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=False,
                   help="show the full traceback of an error instead of one line")


def _one_line(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, ModuleNotFoundError) and err.name and not err.name.startswith("robaug"):
        text = f"the optional package {err.name!r} is not installed; install it (pip install {err.name}) or the " \
               "extra that includes it (pip install 'robaug[recipes]')"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _quiet_broken_pipe() -> int:
    """The reader of our stdout went away (``| head``): stop writing, no traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def report(command: str, err: BaseException, debug: bool) -> int:
    """Print ``err`` (one line, or the traceback with ``debug``) and return exit status 2."""
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    else:
        print(f"robaug {command}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr)
    return 2


def run_main(command: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
             argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with ``parser`` and call ``run(args)``, ending as the module docstring says."""
    args = parser.parse_args(None if argv is None else list(argv))
    debug = bool(getattr(args, "debug", False)) or os.environ.get("ROBAUG_DEBUG", "") not in ("", "0")
    quiet_before = os.environ.get("ROBAUG_QUIET")
    if getattr(args, "quiet", False):
        os.environ["ROBAUG_QUIET"] = "1"
    try:
        status = int(run(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print(f"robaug {command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        return report(command, err, debug)
    finally:
        if quiet_before is None:
            os.environ.pop("ROBAUG_QUIET", None)
        else:
            os.environ["ROBAUG_QUIET"] = quiet_before
