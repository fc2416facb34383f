"""What people would otherwise pick, on the same RabbitMQ: Celery (with and without a result
backend) and raw aio-pika, the ceiling. Each returns no-op jobs per second, end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import aio_pika

from bench.celery_app import make_app
from bench.rabbit import messages_held

CONFIRM_WINDOW = 256  # publishes in flight before waiting for their confirms


async def raw_aio_pika(url: str, messages: int) -> float:
    """Confirmed persistent publishes to a quorum queue, one ack per message, consumed as they
    arrive: the ceiling for anything that carries jobs over this broker."""
    connection = await aio_pika.connect(url)
    async with connection:
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=256)
        queue = await consumer.declare_queue(
            "bench.raw", durable=True, arguments={"x-queue-type": "quorum"}
        )
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == messages:
                done.set()

        await queue.consume(on_message)
        started = time.perf_counter()
        for first in range(0, messages, CONFIRM_WINDOW):
            batch = range(first, min(messages, first + CONFIRM_WINDOW))
            await asyncio.gather(
                *(
                    publisher.default_exchange.publish(
                        aio_pika.Message(
                            str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key="bench.raw",
                    )
                    for n in batch
                )
            )
        await done.wait()
        return messages / (time.perf_counter() - started)


def celery(url: str, tasks: int, backend: str) -> float:
    """Celery with 2 worker processes; without a backend, done is the broker holding nothing."""
    env = {**os.environ, "BENCH_CELERY_BROKER": url, "BENCH_CELERY_BACKEND": backend}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = make_app(url, backend)
    try:
        warm = app.send_task("bench.noop")  # the workers are up and consuming
        if backend:
            warm.get(timeout=60)
        else:
            _wait_drained(url)
        started = time.perf_counter()
        results = [app.send_task("bench.noop") for _ in range(tasks)]
        if backend:
            for result in results:
                result.get(timeout=120)
        else:
            _wait_drained(url)
        return tasks / (time.perf_counter() - started)
    finally:
        app.close()
        worker.terminate()
        worker.wait(timeout=30)


def _wait_drained(url: str, timeout: float = 300) -> None:
    vhost = urlsplit(url).path.lstrip("/")
    deadline = time.monotonic() + timeout
    while messages_held(vhost) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the Celery workers did not drain the queue")
        time.sleep(0.05)
