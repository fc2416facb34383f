"""A RabbitMQ vhost of a benchmark's own, and how many messages its queues still hold."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

AMQP_HOST = "127.0.0.1:5672"


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@contextmanager
def scratch_vhost(prefix: str) -> Iterator[str]:
    """A fresh vhost open to guest; yields its amqp:// URL and deletes it afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def messages_held(vhost: str) -> int:
    """Ready plus unacknowledged messages over every queue of `vhost`."""
    out = _rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "messages")
    return sum(int(n) for n in out.split() if n.isdigit())
