"""One request in flight between a test and an in-process ASGI app, and its response as it arrives."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import trio
from starlette.types import ASGIApp, Message

__all__ = ["Exchange", "HttpResponse", "SseEvent", "StreamingResponse"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One Server-Sent Event (``data`` is the joined ``data:`` lines; ``""`` for a priming event)."""

    data: str
    id: str | None = None
    event: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole response."""

    status: int
    headers: dict[str, str]
    """Names in lower case; a repeated header's values joined with ``", "``."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class Exchange:
    """One request in flight: the app's side (``receive``/``send``) and the client's."""

    def __init__(self, name: str, body: bytes) -> None:
        self.name = name
        self._body: bytes | None = body
        self.disconnected = trio.Event()
        self.finished = trio.Event()
        """Set once the app has returned from the request."""
        self.error: Exception | None = None
        self.error_seen = False
        self._outbox, self.inbox = trio.open_memory_channel[Message](math.inf)

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set():
            return  # the client is gone: what the app writes now goes nowhere, as on a closed socket
        self._outbox.send_nowait(message)

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:  # reported to the client at its next read (never swallowed)
            self.error = exc
        finally:
            self.finished.set()
            self._outbox.close()

    def raise_error(self) -> None:
        if self.error is not None and not self.error_seen:
            self.error_seen = True
            raise self.error

    async def response(self) -> StreamingResponse:
        """Until the app starts its response (status and headers)."""
        async for message in self.inbox:
            if message["type"] == "http.response.start":
                return StreamingResponse(self, message)
        self.raise_error()  # the app returned (or raised) without answering
        raise RuntimeError(f"{self.name}: the app sent no response")

    def disconnect(self) -> None:
        """The client leaves: the app's next ``receive()`` is ``http.disconnect``."""
        self.disconnected.set()


class StreamingResponse:
    """A response being written: its status and headers, then the body as the app sends it."""

    def __init__(self, exchange: Exchange, start: Message) -> None:
        self._exchange = exchange
        self.status: int = start["status"]
        self.headers = _headers(list(start.get("headers", [])))
        self.ended = False
        self._buffer = b""

    async def receive_some(self) -> bytes:
        """The next chunk of the body; ``b""`` once it has ended."""
        while not self.ended:
            try:
                message = await self._exchange.inbox.receive()
            except trio.EndOfChannel:
                self.ended = True
                break
            if message["type"] != "http.response.body":
                continue
            if not message.get("more_body", False):
                self.ended = True
            chunk = bytes(message.get("body", b""))
            if chunk:
                return chunk
        self._exchange.raise_error()
        return b""

    async def read(self) -> bytes:
        """The rest of the body."""
        chunks = []
        while chunk := await self.receive_some():
            chunks.append(chunk)
        return b"".join(chunks)

    async def next_event(self) -> SseEvent | None:
        """The next Server-Sent Event (comments such as keep-alives skipped), or None at the end."""
        while True:
            block, sep, rest = self._buffer.partition(b"\n\n")
            if sep:
                self._buffer = rest
                event = self._parse(block.decode())
                if event is not None:
                    return event
                continue
            chunk = await self.receive_some()
            if not chunk:
                return None
            self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")

    @staticmethod
    def _parse(block: str) -> SseEvent | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
        if not fields and not data:
            return None
        retry = fields.get("retry")
        return SseEvent("\n".join(data), fields.get("id"), fields.get("event"),
                        int(retry) if retry and retry.isdigit() else None)

    def disconnect(self) -> None:
        """The client leaves: the app's next ``receive()`` is ``http.disconnect``."""
        self._exchange.disconnect()

    async def wait_finished(self) -> None:
        """Until the app has returned from this request."""
        await self._exchange.finished.wait()
