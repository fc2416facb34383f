"""The `jobgate` command line: `jobgate submit local/echo --prompt hi --watch`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from jobgate.cli._commands import UsageError
from jobgate.cli._parser import build_parser
from jobgate.client import JobgateError

EXIT_USAGE = 2
EXIT_RPC_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; the exit code says how it went: 0 done, 1 the job ended FAILED or
    CANCELLED, 2 bad usage, 3 the service answered with an error (one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError) as error:
        print(f"jobgate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except JobgateError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RPC_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`jobgate list --json | head -1`): quietly, without Python
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


__all__ = ["main"]
