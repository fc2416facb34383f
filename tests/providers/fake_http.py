"""A small HTTP/1.1 server on 127.0.0.1 for standing in for a provider's API: routes by method
and path pattern, records every request, answers what each route's handler says. One request
per connection, so nothing of ours has to be taken on trust about keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class FormFile:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str | FormFile]]:
        """A multipart/form-data body: each field's values, files as FormFile."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + self.body
        )
        fields: dict[str, list[str | FormFile]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            value: str | FormFile = (
                FormFile(filename, part.get_content_type(), payload)
                if filename is not None
                else payload.decode()
            )
            fields.setdefault(str(name), []).append(value)
        return fields

    def field(self, name: str) -> str:
        [value] = self.form()[name]
        assert isinstance(value, str)
        return value


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, dict | list):
            headers.setdefault("content-type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            headers.setdefault("content-type", "text/plain")
            return self.body.encode(), headers
        return self.body, headers


Handler = Callable[[Request, re.Match[str]], Reply | Awaitable[Reply]]

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized"}


class FakeApi:
    """Routes are tried in the order added; an unrouted request gets a 404."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern), handler))

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await _read(reader)
            if request is None:
                return
            self.requests.append(request)
            reply = await self._answer(request)
            body, headers = reply.encoded()
            head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            head += [f"content-length: {len(body)}", "connection: close", "", ""]
            writer.write("\r\n".join(head).encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, request: Request) -> Reply:
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if method == request.method and match is not None:
                reply = handler(request, match)
                return await reply if inspect.isawaitable(reply) else reply
        return Reply(404, {"error": {"message": f"no route for {request.method} {request.path}"}})


async def _read(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    url = urlsplit(target)
    return Request(method, url.path, parse_qs(url.query), headers, body)
