"""The JobStore on MongoDB: a document per job holding its recent events; older ones in buckets.

Why events live in the job document: every change must bump the job's `event_sequence` and record
the event under that number together. MongoDB makes exactly one thing atomic without a
transaction: an update of one document. So each change is ONE conditional update (legal source
states, the attempt as fencing token) that sets the job's fields, increments `event_sequence` and
appends the numbered event to the job's `events` tail, all in an update pipeline that numbers the
event from the incremented counter. An event exists exactly when its change happened; there is
no moment, and so no crash, that leaves a gap. A transaction (job update + event insert + commit)
would cost three round trips per change instead of one.

Why buckets: a tail that only grows would make the job document grow without bound. Once the
tail holds BUCKET_EVENTS events, they are copied to an immutable bucket document in `job_events`
(keyed by job and first sequence, so copying twice is harmless) and only then pulled from the
tail, conditional on nobody having moved them first. A crash between the two leaves the events in
both places; readers take buckets only up to the job's `flushed` mark, so they never see an event
twice or miss one.

Times are integer microseconds since the epoch: BSON dates keep only milliseconds. The caller's
open-shaped JSON (input options, JSON outputs) is stored as JSON text: MongoDB field names cannot
carry every JSON key ('$'-prefixed, dotted) and BSON has no integers beyond 64 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from core.adapters import codec
from core.errors import AlreadyExists
from core.jobs import (
    EventPayload,
    Job,
    JobError,
    JobEvent,
    JobState,
    LogLine,
    NewJob,
    Output,
    Progress,
    ProviderTask,
    StateChanged,
    lease_end,
    sources_of,
)
from core.ports import Claimed, Held, JobQuery

DEFAULT_DATABASE = "jobgate"
CONNECT_TIMEOUT_MS = 5000
# Events per bucket: also the most the job document's tail holds in steady state.
BUCKET_EVENTS = 32
# The worker already moves larger inline outputs to the blob store (workers/context.py); the
# store refuses them too, so no caller can bloat a job document with bytes.
MAX_INLINE_OUTPUT_BYTES = 64 * 1024

_QUEUED = JobState.QUEUED.value
_RUNNING = JobState.RUNNING.value
_CANCEL_SOURCES = sorted(s.value for s in sources_of(JobState.CANCELLED))
_UNFINISHED = [JobState.QUEUED.value, _RUNNING]
# The job without its event tail: what every read of a job needs.
_JOB_FIELDS = {"events": 0, "fingerprint": 0}
_SEQUENCE_FIELDS = {"event_sequence": 1, "flushed": 1}

JOB_INDEXES = [
    # ListJobs: an owner's jobs newest first, optionally filtered by state and model.
    IndexModel(
        [("owner", ASCENDING), ("create_time", DESCENDING), ("_id", DESCENDING)],
        name="jobs_by_owner",
    ),
    # Idempotent create: a request_id is unique per owner; jobs without one are never merged.
    IndexModel(
        [("owner", ASCENDING), ("request_id", ASCENDING)],
        name="jobs_by_request_id",
        unique=True,
        partialFilterExpression={"request_id": {"$exists": True}},
    ),
    # jobs_ahead: queued jobs of one model older than a given one.
    IndexModel(
        [("state", ASCENDING), ("model", ASCENDING), ("create_time", ASCENDING), ("_id", 1)],
        name="jobs_by_state_model",
    ),
    # unfinished: queued and running jobs of every model, oldest first.
    IndexModel(
        [("state", ASCENDING), ("create_time", ASCENDING), ("_id", ASCENDING)],
        name="jobs_by_state",
    ),
    # unpublished: the outbox sweep, oldest first. A job leaves it once published, claimed or
    # cancelled, so it stays small.
    IndexModel(
        [("create_time", ASCENDING), ("_id", ASCENDING)],
        name="jobs_unpublished",
        partialFilterExpression={"state": _QUEUED, "published": False},
    ),
]
BUCKET_INDEXES = [
    IndexModel([("job_id", ASCENDING), ("first", ASCENDING)], name="events_by_job", unique=True),
]


class MongoJobStore:
    """Jobs and events in MongoDB; see core.ports.JobStore for the semantics."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._client = client
        db = client[database]
        self._jobs: AsyncCollection[dict[str, Any]] = db["jobs"]
        self._buckets: AsyncCollection[dict[str, Any]] = db["job_events"]

    @classmethod
    async def open(cls, url: str, **client_options: Any) -> MongoJobStore:
        """Connects to `url` (its path names the database, `jobgate` by default) and creates the
        indexes. Raises ConnectionError within the server selection timeout (5 s unless the URL
        says otherwise) when the server cannot be reached. `client_options` go to the driver
        (e.g. `event_listeners`)."""
        options: dict[str, Any] = dict(client_options)
        if "serverselectiontimeoutms" not in url.lower():
            options.setdefault("serverSelectionTimeoutMS", CONNECT_TIMEOUT_MS)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **options)
        try:
            database = client.get_default_database(DEFAULT_DATABASE).name
            store = cls(client, database)
            await store._jobs.create_indexes(JOB_INDEXES)
            await store._buckets.create_indexes(BUCKET_INDEXES)
            await store._upgrade()
        except ServerSelectionTimeoutError as exc:
            await client.close()
            timeout = client.options.server_selection_timeout
            # The driver's message ends with a long topology dump: keep the cause only.
            cause = str(exc).split(", Timeout:")[0]
            raise ConnectionError(f"cannot reach MongoDB within {timeout:g} s: {cause}") from exc
        except BaseException:
            await client.close()
            raise
        return store

    async def _upgrade(self) -> None:
        """Gives queued jobs recorded before the outbox their `published` flag, so the sweep
        publishes them once more (a lease makes the duplicate harmless). Jobs in other states
        never need it; a job without `lease_expire_time` reads as unleased."""
        await self._jobs.update_many(
            {"state": _QUEUED, "published": {"$exists": False}}, {"$set": {"published": False}}
        )

    async def close(self) -> None:
        await self._client.close()

    async def create(self, job: NewJob) -> tuple[Job, bool]:
        micros = codec.time_to_micros(job.create_time)
        document = {
            "_id": job.id,
            "owner": job.owner,
            "model": job.model,
            "input": _input_doc(job),
            "state": JobState.QUEUED.value,
            "attempt": 0,
            "progress": None,
            "outputs": [],
            "error": None,
            "create_time": micros,
            "start_time": None,
            "end_time": None,
            "event_sequence": 1,
            "flushed": 0,
            "lease_expire_time": None,
            "published": False,
            "billed": job.billed,
            "usage_units": 0,
            "fingerprint": job.fingerprint(),
            "events": [_event_doc(1, micros, 0, StateChanged(JobState.QUEUED))],
        }
        if job.request_id is not None:
            document["request_id"] = job.request_id
        try:
            await self._jobs.insert_one(document)
        except DuplicateKeyError as exc:
            if "request_id" not in (exc.details or {}).get("keyPattern", {}):
                raise
            return await self._existing(job, document["fingerprint"]), False
        return _job_from_doc(document), True

    async def _existing(self, job: NewJob, fingerprint: str) -> Job:
        found = await self._jobs.find_one(
            {"owner": job.owner, "request_id": job.request_id}, {"events": 0}
        )
        if found is None:
            raise AlreadyExists(f"request_id {job.request_id!r} is being used concurrently")
        if found["fingerprint"] != fingerprint:
            raise AlreadyExists(
                f"request_id {job.request_id!r} was already used for a different request"
            )
        return _job_from_doc(found)

    async def get(self, job_id: str) -> Job | None:
        found = await self._jobs.find_one({"_id": job_id}, _JOB_FIELDS)
        return _job_from_doc(found) if found else None

    async def list(self, query: JobQuery) -> list[Job]:
        where: dict[str, Any] = {"owner": query.owner}
        if query.state is not None:
            where["state"] = query.state.value
        if query.model is not None:
            where["model"] = query.model
        if query.before is not None:
            before_time, before_id = query.before
            where.update(_before(codec.time_to_micros(before_time), before_id))
        cursor = self._jobs.find(
            where,
            _JOB_FIELDS,
            sort=[("create_time", DESCENDING), ("_id", DESCENDING)],
            limit=query.limit,
            batch_size=query.limit,
        )
        return [_job_from_doc(d) async for d in cursor]

    async def jobs_ahead(self, job: Job) -> int:
        where = {
            "state": JobState.QUEUED.value,
            "model": job.model,
            **_before(codec.time_to_micros(job.create_time), job.id),
        }
        return await self._jobs.count_documents(where)

    async def claim(self, job_id: str, lease: timedelta = timedelta(0)) -> Claimed | Held | None:
        now = datetime.now(UTC)
        micros = codec.time_to_micros(now)
        change = {
            "state": _RUNNING,
            "attempt": {"$add": ["$attempt", 1]},
            "progress": None,
            "outputs": [],
            "start_time": micros,
            "lease_expire_time": codec.time_to_micros(lease_end(now, lease)),
        }
        # Queued, or running on a lease that has run out (None also matches a missing field).
        claimable = [
            {"state": _QUEUED},
            {"state": _RUNNING, "lease_expire_time": {"$lte": micros}},
            {"state": _RUNNING, "lease_expire_time": None},
        ]
        found = await self._change(
            {"_id": job_id, "$or": claimable},
            change,
            micros,
            StateChanged(JobState.RUNNING),
            _JOB_FIELDS,
        )
        if found is None:
            held = await self.get(job_id)
            if held is None or held.state.terminal:
                return None
            return Held(held, held.lease_expire_time or now)
        job = _job_from_doc(found)
        event = _event(job_id, job.event_sequence, micros, job.attempt, StateChanged(job.state))
        return Claimed(job, event)

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        until = codec.time_to_micros(lease_end(datetime.now(UTC), lease))
        result = await self._jobs.update_one(
            {"_id": job_id, "state": _RUNNING, "attempt": attempt},
            {"$set": {"lease_expire_time": until}},
        )
        return result.matched_count == 1

    async def record(
        self, job_id: str, attempt: int, payload: Progress | LogLine | Output
    ) -> JobEvent | None:
        change: dict[str, Any]
        if isinstance(payload, Progress):
            change = {"progress": {"$literal": codec.progress_to_dict(payload)}}
        elif isinstance(payload, Output):
            check_inline_output(payload)
            change = {"outputs": {"$concatArrays": ["$outputs", [_literal_output(payload)]]}}
        elif isinstance(payload, LogLine):
            change = {}
        else:
            raise TypeError(f"record() takes Progress, LogLine or Output, not {payload!r}")
        micros = _now_micros()
        found = await self._change(
            {"_id": job_id, "state": _RUNNING, "attempt": attempt},
            change,
            micros,
            payload,
            _SEQUENCE_FIELDS,
        )
        if found is None:
            return None
        return _event(job_id, found["event_sequence"], micros, attempt, payload)

    async def set_provider_task(self, job_id: str, attempt: int, task: ProviderTask) -> bool:
        result = await self._jobs.update_one(
            {"_id": job_id, "state": _RUNNING, "attempt": attempt},
            {"$set": {"provider_task": codec.provider_task_to_dict(task)}},
        )
        return result.matched_count == 1

    async def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        error: JobError | None = None,
        usage_units: int = 0,
    ) -> JobEvent | None:
        if not state.terminal:
            raise ValueError(f"finish() needs a terminal state, not {state}")
        micros = _now_micros()
        payload = StateChanged(state, error)
        found = await self._change(
            {"_id": job_id, "state": _RUNNING, "attempt": attempt},
            {
                "state": state.value,
                "error": _literal_error(error),
                "end_time": micros,
                "lease_expire_time": None,
                "usage_units": usage_units,
            },
            micros,
            payload,
            _SEQUENCE_FIELDS,
        )
        if found is None:
            return None
        return _event(job_id, found["event_sequence"], micros, attempt, payload)

    async def cancel(self, job_id: str, error: JobError) -> tuple[Job, JobEvent | None] | None:
        micros = _now_micros()
        payload = StateChanged(JobState.CANCELLED, error)
        found = await self._change(
            {"_id": job_id, "state": {"$in": _CANCEL_SOURCES}},
            {
                "state": JobState.CANCELLED.value,
                "error": _literal_error(error),
                "end_time": micros,
                "lease_expire_time": None,
            },
            micros,
            payload,
            _JOB_FIELDS,
        )
        if found is None:
            unchanged = await self.get(job_id)
            return None if unchanged is None else (unchanged, None)
        job = _job_from_doc(found)
        return job, _event(job_id, job.event_sequence, micros, job.attempt, payload)

    async def _change(
        self,
        where: dict[str, Any],
        change: dict[str, Any],
        micros: int,
        payload: EventPayload,
        projection: dict[str, int],
    ) -> dict[str, Any] | None:
        """The one conditional update behind every state change and record: applies `change`,
        numbers the event from the incremented `event_sequence` and appends it, atomically.
        Returns the updated job (as `projection` shapes it), or None when `where` matched none."""
        event = {
            "seq": "$event_sequence",
            "time": micros,
            "attempt": "$attempt",
            "payload": {"$literal": _payload_doc(payload)},
        }
        pipeline = [
            {"$set": {**change, "event_sequence": {"$add": ["$event_sequence", 1]}}},
            {"$set": {"events": {"$concatArrays": ["$events", [event]]}}},
        ]
        found = await self._jobs.find_one_and_update(
            where, pipeline, projection, return_document=ReturnDocument.AFTER
        )
        if found is not None and _tail_is_full(found):
            await self._flush(where["_id"])
        return found

    async def _flush(self, job_id: str) -> None:
        """Moves the oldest full buckets of the job's event tail to `job_events`; safe to run
        concurrently and to repeat after a crash (see the module docstring)."""
        found = await self._jobs.find_one({"_id": job_id}, {"events": 1, "flushed": 1})
        if found is None:
            return
        flushed, tail = found["flushed"], found["events"]
        while len(tail) >= BUCKET_EVENTS:
            bucket, tail = tail[:BUCKET_EVENTS], tail[BUCKET_EVENTS:]
            first, last = flushed + 1, flushed + BUCKET_EVENTS
            # A concurrent flusher may insert the same, immutable bucket first.
            with suppress(DuplicateKeyError):
                await self._buckets.update_one(
                    {"job_id": job_id, "first": first},
                    {"$setOnInsert": {"last": last, "events": bucket}},
                    upsert=True,
                )
            moved = await self._jobs.update_one(
                {"_id": job_id, "flushed": flushed},
                {"$pull": {"events": {"seq": {"$lte": last}}}, "$set": {"flushed": last}},
            )
            if not moved.modified_count:
                return  # another flusher is ahead of us
            flushed = last

    async def events(self, job_id: str, after: int, limit: int = 1000) -> list[JobEvent]:
        # The job first: every bucket up to its `flushed` mark exists before the mark moves.
        found = await self._jobs.find_one({"_id": job_id}, {"events": 1, "flushed": 1})
        if found is None or limit <= 0:
            return []
        flushed = found["flushed"]
        docs: list[dict[str, Any]] = []
        if after < flushed:
            buckets = self._buckets.find(
                {"job_id": job_id, "first": {"$lte": flushed}, "last": {"$gt": after}},
                {"events": 1},
                sort=[("first", ASCENDING)],
                limit=limit // BUCKET_EVENTS + 2,
            )
            docs = [e async for b in buckets for e in b["events"]]
        docs += found["events"]
        wanted = [d for d in docs if d["seq"] > after][:limit]
        return [
            _event(job_id, d["seq"], d["time"], d["attempt"], _payload_from_doc(d["payload"]))
            for d in wanted
        ]

    async def unfinished(self, limit: int = 1000) -> list[Job]:
        cursor = self._jobs.find(
            {"state": {"$in": _UNFINISHED}},
            _JOB_FIELDS,
            sort=[("create_time", ASCENDING), ("_id", ASCENDING)],
            limit=limit,
            batch_size=limit,
        )
        return [_job_from_doc(d) async for d in cursor]

    async def mark_published(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._jobs.update_many(
                {"_id": {"$in": list(job_ids)}, "state": _QUEUED, "published": {"$ne": True}},
                {"$set": {"published": True}},
            )

    async def unpublished(self, older_than: datetime, limit: int) -> list[Job]:
        cursor = self._jobs.find(
            {
                "state": _QUEUED,
                "published": False,
                "create_time": {"$lt": codec.time_to_micros(older_than)},
            },
            _JOB_FIELDS,
            sort=[("create_time", ASCENDING), ("_id", ASCENDING)],
            limit=limit,
            batch_size=limit,
        )
        return [_job_from_doc(d) async for d in cursor]


def check_inline_output(output: Output) -> None:
    """Refuses an inline output too big for a job document: its bytes belong in the blob store."""
    if output.text is not None:
        size = len(output.text.encode())
    elif output.json is not None:
        size = len(codec.dumps(output.json).encode())
    else:
        return
    if size > MAX_INLINE_OUTPUT_BYTES:
        raise ValueError(
            f"inline output {output.label!r} is {size} bytes, over the"
            f" {MAX_INLINE_OUTPUT_BYTES} a job document takes: store it as a blob"
        )


def _tail_is_full(found: dict[str, Any]) -> bool:
    # Only the change that fills a bucket flushes; if it dies first, the next full one does.
    tail = found["event_sequence"] - found["flushed"]
    return tail >= BUCKET_EVENTS and tail % BUCKET_EVENTS == 0


def _before(micros: int, job_id: str) -> dict[str, Any]:
    """Jobs created before (micros, job_id) in (create_time, id) order."""
    return {
        "$or": [
            {"create_time": {"$lt": micros}},
            {"create_time": micros, "_id": {"$lt": job_id}},
        ]
    }


def _now_micros() -> int:
    return codec.time_to_micros(datetime.now(UTC))


def _input_doc(job: NewJob) -> dict[str, Any]:
    document = codec.input_to_dict(job.input)
    document["options"] = codec.dumps(document["options"])
    return document


def _output_doc(output: Output) -> dict[str, Any]:
    document = codec.output_to_dict(output)
    if document["json"] is not None:
        document["json"] = codec.dumps(document["json"])
    return document


def _output_from_doc(document: dict[str, Any]) -> Output:
    text = document.get("json")
    return codec.output_from_dict({**document, "json": codec.loads(text) if text else None})


def _literal_output(output: Output) -> dict[str, Any]:
    return {"$literal": _output_doc(output)}


def _literal_error(error: JobError | None) -> dict[str, Any] | None:
    return {"$literal": codec.error_to_dict(error)} if error else None


def _payload_doc(payload: EventPayload) -> dict[str, Any]:
    if isinstance(payload, Output):
        return {"kind": "output", **_output_doc(payload)}
    return codec.payload_to_dict(payload)


def _payload_from_doc(document: dict[str, Any]) -> EventPayload:
    if document.get("kind") == "output":
        return _output_from_doc({k: v for k, v in document.items() if k != "kind"})
    return codec.payload_from_dict(document)


def _event_doc(sequence: int, micros: int, attempt: int, payload: EventPayload) -> dict[str, Any]:
    return {"seq": sequence, "time": micros, "attempt": attempt, "payload": _payload_doc(payload)}


def _event(
    job_id: str, sequence: int, micros: int, attempt: int, payload: EventPayload
) -> JobEvent:
    return JobEvent(
        job_id=job_id,
        sequence=sequence,
        time=codec.time_from_micros(micros),
        attempt=attempt,
        payload=payload,
    )


def _job_from_doc(document: dict[str, Any]) -> Job:
    job_input = dict(document["input"])
    job_input["options"] = codec.loads(job_input["options"])
    progress, error = document.get("progress"), document.get("error")
    start_time, end_time = document.get("start_time"), document.get("end_time")
    lease_expire_time = document.get("lease_expire_time")
    task = document.get("provider_task")
    return Job(
        id=document["_id"],
        owner=document["owner"],
        model=document["model"],
        input=codec.input_from_dict(job_input),
        state=JobState(document["state"]),
        attempt=document["attempt"],
        progress=codec.progress_from_dict(progress) if progress else None,
        outputs=tuple(_output_from_doc(o) for o in document["outputs"]),
        error=codec.error_from_dict(error) if error else None,
        create_time=codec.time_from_micros(document["create_time"]),
        start_time=codec.time_from_micros(start_time) if start_time is not None else None,
        end_time=codec.time_from_micros(end_time) if end_time is not None else None,
        event_sequence=document["event_sequence"],
        request_id=document.get("request_id"),
        lease_expire_time=(
            codec.time_from_micros(lease_expire_time) if lease_expire_time is not None else None
        ),
        provider_task=codec.provider_task_from_dict(task) if task else None,
        # Documents from before billing have neither field: unbilled, no usage.
        billed=document.get("billed", False),
        usage_units=document.get("usage_units", 0),
    )
