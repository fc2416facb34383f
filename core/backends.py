"""Opens each port's adapter from its URL in Settings: the scheme picks the backend."""

from __future__ import annotations

from dataclasses import dataclass

from core.catalog import Catalog
from core.ports import AccountStore, BlobStore, Broker, EventBus, JobStore


@dataclass
class Backends:
    """Everything the server and the workers talk to, opened once per process."""

    jobs: JobStore
    accounts: AccountStore
    broker: Broker
    events: EventBus
    blobs: BlobStore
    catalog: Catalog

    async def close(self) -> None:
        for port in (self.broker, self.events, self.jobs, self.accounts, self.blobs):
            await port.close()
