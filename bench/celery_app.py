"""The Celery side of the comparison: a no-op task with acks_late and confirmed publishes.

Configured from the environment so the benchmark's worker processes build the same app:
BENCH_CELERY_BROKER (amqp URL) and BENCH_CELERY_BACKEND ("" for none, e.g. "rpc://").
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(broker: str, backend: str) -> Celery:
    app = Celery("bench", broker=broker, backend=backend or None)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=not backend,
        broker_transport_options={"confirm_publish": True},
        worker_prefetch_multiplier=4,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


app = make_app(
    os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    os.environ.get("BENCH_CELERY_BACKEND", ""),
)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing: what is measured is the machinery around it."""
