"""The `jobgate` argument parser: global options, the client commands and plugin commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from jobgate.cli import _commands as commands
from jobgate.client._channel import API_KEY_ENV, DEFAULT_TARGET
from jobgate.client._messages import STATE_NAMES

ADDRESS_ENV = "JOBGATE_ADDRESS"
PLUGIN_GROUP = "jobgate.commands"
DEFAULT_LIST_LIMIT = 50

Subparsers = argparse._SubParsersAction  # argparse has no public name for it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobgate",
        description="Submit AI jobs to a jobgate service and watch them to the end.",
        parents=[global_options(argparse.SUPPRESS)],
    )
    # Global options also work after the command (`jobgate submit … --json`); these defaults
    # apply when neither place sets them.
    parser.set_defaults(
        address=os.environ.get(ADDRESS_ENV) or DEFAULT_TARGET,
        api_key=os.environ.get(API_KEY_ENV, ""),
        json=False,
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_client_commands(subparsers)
    add_plugin_commands(subparsers)
    return parser


def add_plugin_commands(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Commands other packages add through the `jobgate.commands` entry points, each a
    `register(subparsers)` function. A plugin that fails is skipped with a warning, so that it
    cannot take the client commands down with it."""
    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            entry_point.load()(subparsers)
        except Exception as error:  # any plugin fault at all must leave the CLI usable
            print(
                f"jobgate: warning: skipped plugin command {entry_point.name!r} "
                f"({entry_point.value}): {type(error).__name__}: {error}",
                file=sys.stderr,
            )


def global_options(default: Any) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--address",
        default=default,
        help=f"host:port of the service (${ADDRESS_ENV}, default {DEFAULT_TARGET})",
    )
    options.add_argument("--api-key", default=default, help=f"the API key (${API_KEY_ENV})")
    options.add_argument(
        "--json",
        action="store_true",
        default=default,
        help="print one JSON object per line, for scripts",
    )
    return options


def _add_client_commands(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    common = [global_options(argparse.SUPPRESS)]

    def add(name: str, command: commands.Command, help: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, description=help, parents=common)
        parser.set_defaults(func=commands.with_client(command))
        return parser

    submit = add("submit", commands.submit, "submit a job")
    submit.add_argument("model", metavar="MODEL", help="e.g. local/echo (see `jobgate models`)")
    submit.add_argument("--prompt", help="the text prompt")
    submit.add_argument("--negative-prompt", help="what the output should not contain")
    submit.add_argument("--size", help="output size, WIDTHxHEIGHT")
    submit.add_argument("--aspect-ratio", help="output aspect ratio, e.g. 16:9")
    submit.add_argument("--duration", type=_seconds, metavar="S", help="duration in seconds")
    submit.add_argument("--seed", type=int, metavar="N", help="seed for reproducible output")
    submit.add_argument(
        "--option",
        type=_option,
        action="append",
        metavar="KEY=VALUE",
        help="a model-specific option, repeatable; VALUE is read as JSON if it parses",
    )
    submit.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="an input file, uploaded before the job is submitted; repeatable",
    )
    submit.add_argument("--request-id", help="makes retries of this submit idempotent")
    submit.add_argument("--watch", action="store_true", help="watch the job to its end")

    get = add("get", commands.get, "show a job")
    get.add_argument("name", metavar="NAME", help="jobs/ID or ID")

    listing = add("list", commands.list_jobs, "list your jobs, newest first")
    listing.add_argument("--state", type=str.upper, choices=STATE_NAMES, help="only this state")
    listing.add_argument("--model", help="only jobs of this model")
    listing.add_argument(
        "--limit",
        type=_count,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"at most N jobs, 0 for all (default {DEFAULT_LIST_LIMIT})",
    )

    cancel = add("cancel", commands.cancel, "cancel a job")
    cancel.add_argument("name", metavar="NAME", help="jobs/ID or ID")

    watch = add("watch", commands.watch, "watch a job to its end")
    watch.add_argument("name", metavar="NAME", help="jobs/ID or ID")

    add("models", commands.models, "list the models jobs can run")

    add("balance", commands.balance, "show your balance: available and held for jobs")
    usage = add("usage", commands.usage, "show what your jobs cost, per day and model")
    usage.add_argument("--days", type=_count, default=30, metavar="N", help="days back (30)")


def _option(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return seconds


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return count
