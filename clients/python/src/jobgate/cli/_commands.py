"""The client commands: each turns parsed arguments into calls and prints what came back."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

from jobgate.cli._output import HumanOutput, JsonOutput, Output
from jobgate.client import JobClient
from jobgate.client._channel import API_KEY_ENV
from jobgate.client._messages import FAILED_STATES
from jobgate.v1 import job_pb2, job_service_pb2

EXIT_OK = 0
EXIT_JOB_FAILED = 1
MAX_PAGE_SIZE = 100

Command = Callable[[argparse.Namespace, JobClient, Output], int]


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see; reported with exit code 2."""


def with_client(command: Command) -> Callable[[argparse.Namespace], int]:
    """Adapts a client command to the `func(args) -> int` every subcommand sets."""

    def run(args: argparse.Namespace) -> int:
        if not args.api_key:
            raise UsageError(
                f"no API key: pass --api-key or set {API_KEY_ENV} (`jobgate dev` prints one)"
            )
        output: Output = JsonOutput() if args.json else HumanOutput()
        with JobClient(args.address, args.api_key) as client:
            try:
                return command(args, client, output)
            finally:
                output.close()

    return run


def submit(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    files = [_upload(client, path) for path in args.file or ()]
    job = client.submit(
        args.model,
        args.prompt,
        negative_prompt=args.negative_prompt,
        files=files,
        size=args.size,
        aspect_ratio=args.aspect_ratio,
        duration=args.duration,
        seed=args.seed,
        options=dict(args.option or ()),
        request_id=args.request_id,
    )
    if args.watch:
        return _follow(client, output, job.name)
    output.job(job)
    return EXIT_OK


def _upload(client: JobClient, path: str) -> job_pb2.BlobRef:
    try:
        return client.upload(path)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def get(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    output.job(client.get(args.name))
    return EXIT_OK


def list_jobs(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    page_size = min(args.limit, MAX_PAGE_SIZE) if args.limit else MAX_PAGE_SIZE
    jobs = client.list(state=args.state, model=args.model, page_size=page_size)
    output.jobs(itertools.islice(jobs, args.limit or None))
    return EXIT_OK


def cancel(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    output.job(client.cancel(args.name))
    return EXIT_OK


def watch(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    return _follow(client, output, args.name)


def models(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    output.models(client.models())
    return EXIT_OK


def balance(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    output.balance(client.balance())
    return EXIT_OK


def usage(args: argparse.Namespace, client: JobClient, output: Output) -> int:
    output.usage(client.usage(args.days))
    return EXIT_OK


def _follow(client: JobClient, output: Output, name: str) -> int:
    """Prints the job's watch stream to its end; EXIT_JOB_FAILED if it ended FAILED/CANCELLED."""
    state: job_pb2.Job.State = job_pb2.Job.STATE_UNSPECIFIED
    for message in client.watch(name):
        output.watch_message(message)
        state = _state_after(message, state)
    return EXIT_JOB_FAILED if state in FAILED_STATES else EXIT_OK


def _state_after(
    message: job_service_pb2.WatchJobResponse, state: job_pb2.Job.State
) -> job_pb2.Job.State:
    if message.WhichOneof("update") == "job":
        return message.job.state
    if message.WhichOneof("update") == "event" and message.event.HasField("state_change"):
        return message.event.state_change.state
    return state
