"""`jobgate dlq list | show JOB | requeue JOB...|--all`: the RabbitMQ dead-letter queue for
operators, on the broker that JOBGATE_* settings name."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from core import event_loop
from core.adapters.dead_letters import DeadLetter, DeadLetters
from core.adapters.rabbitmq import RabbitError, Topology
from core.backends import rabbitmq_topology
from core.errors import ConfigError
from core.jobs import job_id_from_name
from core.settings import Settings
from launcher.commands import Subparsers


def register_dlq(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, inspect and re-queue dead-lettered jobs (RabbitMQ)",
        description="Jobs whose messages RabbitMQ dead-lettered: delivered too often (they kept "
        "crashing workers) or rejected. Re-queueing sends them back to their work queue.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list dead-lettered jobs")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    show = actions.add_parser("show", help="show one dead-lettered job")
    show.add_argument("job", help="a job id or name (jobs/ID)")
    requeue = actions.add_parser("requeue", help="send dead-lettered jobs back to work")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("jobs", nargs="*", default=[], help="job ids or names")
    which.add_argument("--all", action="store_true", help="every dead-lettered job")
    parser.set_defaults(func=_dlq)


def _dlq(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        url, topology = _rabbitmq(settings)
        return event_loop.run(_run(args, url, topology))
    except (ConfigError, RabbitError) as error:
        print(f"jobgate dlq: {error}", file=sys.stderr)
        return 2


def _rabbitmq(settings: Settings) -> tuple[str, Topology]:
    if urlsplit(settings.broker_url).scheme not in ("amqp", "amqps"):
        raise ConfigError(
            f"JOBGATE_BROKER_URL={settings.broker_url!r}: only a RabbitMQ broker (amqp://) has"
            " a dead-letter queue"
        )
    topology = rabbitmq_topology(settings)
    return settings.broker_url, topology


async def _run(args: argparse.Namespace, url: str, topology: Topology) -> int:
    letters = await DeadLetters.open(url, topology=topology)
    try:
        match args.action:
            case "list":
                return _print_list(await letters.list(args.limit))
            case "show":
                return _print_one(args.job, await letters.find(_job_id(args.job)))
            case _:
                return await _requeue(letters, None if args.all else args.jobs)
    finally:
        await letters.close()


def _job_id(text: str) -> str:
    return job_id_from_name(text) or text


def _print_list(letters: list[DeadLetter]) -> int:
    if not letters:
        print("the dead-letter queue is empty")
        return 0
    print(f"{'JOB':34} {'MODEL':24} {'REASON':16} DIED")
    for letter in letters:
        died = letter.time.isoformat() if letter.time else "-"
        print(f"{letter.job_id:34} {letter.model:24} {letter.reason:16} {died}")
    return 0


def _print_one(text: str, letter: DeadLetter | None) -> int:
    if letter is None:
        print(f"jobgate dlq: job {text} is not in the dead-letter queue", file=sys.stderr)
        return 1
    for label, value in (
        ("job", letter.job_id),
        ("model", letter.model),
        ("reason", letter.reason),
        ("died in", letter.queue),
        ("died at", letter.time.isoformat() if letter.time else "-"),
        ("deaths", str(letter.deaths)),
    ):
        print(f"{label + ':':9} {value}")
    return 0


async def _requeue(letters: DeadLetters, jobs: list[str] | None) -> int:
    wanted = None if jobs is None else [_job_id(job) for job in jobs]
    requeued = await letters.requeue(wanted)
    for job_id in requeued:
        print(f"requeued {job_id}")
    missing = sorted(set(wanted or ()) - set(requeued))
    for job_id in missing:
        print(f"jobgate dlq: job {job_id} is not in the dead-letter queue", file=sys.stderr)
    if not requeued and not missing:
        print("the dead-letter queue is empty")
    return 1 if missing else 0
