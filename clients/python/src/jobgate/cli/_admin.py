"""`jobgate admin …`: users, API keys, tariffs and balances through AdminService, with an admin
key (`jobgate dev` prints one). Plugged in through the `jobgate.commands` entry points.

Money is in micros (millionths of the currency unit) on the command line, as in the API.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from jobgate.cli._commands import EXIT_OK, UsageError
from jobgate.cli._parser import Subparsers, global_options
from jobgate.cli._text import table
from jobgate.client import AdminClient, ModelPrice
from jobgate.client._channel import API_KEY_ENV
from jobgate.v1 import account_pb2, model_pb2

AdminCommand = Callable[[argparse.Namespace, AdminClient], Iterable[Message] | str]
# MODEL=PER_JOB or MODEL=PER_JOB+PER_UNIT/UNIT, e.g. acme/image=1000+500/image
_PRICE = re.compile(r"(?P<model>[^=]+)=(?P<job>\d+)(?:\+(?P<unit_price>\d+)/(?P<unit>\w+))?")


def register_admin(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    common = [global_options(argparse.SUPPRESS)]
    admin = subparsers.add_parser(
        "admin",
        help="manage users, API keys, tariffs and balances (needs an admin key)",
        description="Operators' commands, over gRPC with an API key that has the admin scope.",
        parents=common,
    )
    groups = admin.add_subparsers(dest="group", required=True, metavar="WHAT")

    def add(
        parent: Subparsers[argparse.ArgumentParser], name: str, run: AdminCommand, help: str
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help, description=help, parents=common)
        parser.set_defaults(func=_with_admin(run))
        return parser

    user = groups.add_parser("user", help="create users, set their tariff").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create_user = add(user, "create", _create_user, "create a user")
    create_user.add_argument("user", metavar="USER")
    create_user.add_argument("--tariff", help="its tariff (default: catalog prices, no limits)")
    set_tariff = add(user, "set-tariff", _set_user_tariff, "put a user on a tariff")
    set_tariff.add_argument("user", metavar="USER")
    set_tariff.add_argument("tariff", metavar="TARIFF", help="a tariff, or `default`")

    key = groups.add_parser("key", help="issue, list and revoke API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create_key = add(key, "create", _create_key, "issue an API key (shown once)")
    create_key.add_argument("user", metavar="USER")
    create_key.add_argument(
        "--scope",
        action="append",
        choices=("jobs", "admin"),
        help="jobs (default) and/or admin; repeatable",
    )
    add(key, "list", _list_keys, "list a user's keys").add_argument("user", metavar="USER")
    add(key, "revoke", _revoke_key, "revoke a key").add_argument(
        "key", metavar="KEY_ID", help="the id after `jg_`, or apiKeys/ID"
    )

    tariff = groups.add_parser("tariff", help="set and show tariffs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    put = add(tariff, "set", _set_tariff, "create or replace a tariff")
    put.add_argument("name", metavar="NAME")
    put.add_argument(
        "--price",
        action="append",
        type=_price,
        metavar="MODEL=MICROS[+MICROS/UNIT]",
        help="a model's price per job [+ per unit: image, output_second, thousand_tokens];"
        " repeatable, e.g. acme/image=1000+500/image",
    )
    put.add_argument("--max-concurrent", type=int, default=0, help="unfinished jobs (0: any)")
    put.add_argument("--rate", type=int, default=0, help="submissions a minute (0: any)")
    add(tariff, "show", _show_tariff, "show a tariff").add_argument("name", metavar="NAME")

    top_up = add(groups, "top-up", _top_up, "add money to a user's balance")
    top_up.add_argument("user", metavar="USER")
    top_up.add_argument("micros", type=int, metavar="MICROS")
    top_up.add_argument("--request-id", help="makes a retried top-up add once")
    add(groups, "balance", _balance, "show a user's balance").add_argument("user", metavar="USER")
    usage = add(groups, "usage", _usage, "show what a user's jobs cost, per day and model")
    usage.add_argument("user", metavar="USER")
    usage.add_argument("--days", type=int, default=30, help="how many days back (30)")
    add(groups, "refund", _refund, "give back what a job was charged").add_argument(
        "job", metavar="JOB", help="jobs/ID or ID"
    )


def _with_admin(run: AdminCommand) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        if not args.api_key:
            raise UsageError(f"no API key: pass --api-key or set {API_KEY_ENV} to an admin key")
        with AdminClient(args.address, args.api_key) as client:
            result = run(args, client)
        _print(result, args.json, sys.stdout)
        return EXIT_OK

    return command


def _print(result: Iterable[Message] | str, as_json: bool, out: TextIO) -> None:
    if isinstance(result, str):
        out.write(result + "\n")
        return
    for message in result:
        if as_json:
            out.write(json.dumps(json_format.MessageToDict(message), separators=(",", ":")))
        else:
            out.write(_text(message))
        out.write("\n")
    out.flush()


def _text(message: Message) -> str:
    """One message for people; usage rows and keys as table lines."""
    if isinstance(message, account_pb2.Balance):
        return (
            f"{message.name.removesuffix('/balance')}  available {message.available_micros}"
            f"  held {message.held_micros} (micros)"
        )
    if isinstance(message, account_pb2.UsageRecord):
        counts = f"{message.job_count} jobs  {message.units} units"
        return f"{message.day}  {message.model}  {counts}  {message.cost_micros} micros"
    if isinstance(message, account_pb2.ApiKey):
        scopes = ",".join(
            account_pb2.ApiKeyScope.Name(s).removeprefix("API_KEY_SCOPE_").lower()
            for s in message.scopes
        )
        used = (
            f"last used {message.last_use_time.ToDatetime():%Y-%m-%d %H:%M}"
            if message.HasField("last_use_time")
            else "never used"
        )
        revoked = "  revoked" if message.revoked else ""
        return f"{message.name}  {message.user}  {scopes}  {used}{revoked}"
    if isinstance(message, account_pb2.Tariff):
        rows = [[p.model, str(p.price.per_job_micros), _unit_text(p.price)] for p in message.prices]
        limits = (
            f"{message.name}  max concurrent {message.max_concurrent_jobs or 'any'}"
            f"  per minute {message.submits_per_minute or 'any'}"
        )
        if not rows:
            return limits + "\n(catalog prices for every model)"
        return "\n".join([limits, *table(["MODEL", "PER JOB", "PER UNIT"], rows)])
    if isinstance(message, account_pb2.User):
        return f"{message.name}  tariff {message.tariff or 'default'}"
    return json_format.MessageToJson(message)


def _unit_text(price: model_pb2.Price) -> str:
    if price.unit == model_pb2.Price.UNIT_UNSPECIFIED:
        return "-"
    unit = model_pb2.Price.Unit.Name(price.unit).removeprefix("UNIT_").lower()
    return f"{price.per_unit_micros}/{unit}"


def _price(text: str) -> tuple[str, ModelPrice]:
    match = _PRICE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected MODEL=MICROS or MODEL=MICROS+MICROS/UNIT, got {text!r}"
        )
    unit = match["unit"] or ""
    return match["model"], ModelPrice(int(match["job"]), int(match["unit_price"] or 0), unit)


def _create_user(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return [client.create_user(args.user, args.tariff)]


def _set_user_tariff(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    tariff = None if args.tariff == "default" else args.tariff
    return [client.set_user_tariff(args.user, tariff)]


def _create_key(args: argparse.Namespace, client: AdminClient) -> str:
    issued = client.create_key(args.user, args.scope or ("jobs",))
    if args.json:
        return json.dumps(json_format.MessageToDict(issued), separators=(",", ":"))
    return f"{issued.key}\n(shown once: only its hash is kept; {issued.api_key.name})"


def _list_keys(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return list(client.list_keys(args.user))


def _revoke_key(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return [client.revoke_key(args.key)]


def _set_tariff(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    prices = dict(args.price or ())
    if len(prices) != len(args.price or ()):
        raise UsageError("a model is priced twice")
    return [
        client.set_tariff(
            args.name,
            prices,
            max_concurrent_jobs=args.max_concurrent,
            submits_per_minute=args.rate,
        )
    ]


def _show_tariff(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return [client.get_tariff(args.name)]


def _top_up(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return [client.top_up(args.user, args.micros, request_id=args.request_id)]


def _balance(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return [client.balance(args.user)]


def _usage(args: argparse.Namespace, client: AdminClient) -> list[Message]:
    return list(client.usage(args.user, args.days))


def _refund(args: argparse.Namespace, client: AdminClient) -> str:
    return f"refunded {client.refund(args.job)} micros"
