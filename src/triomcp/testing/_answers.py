"""How a test client answers what a handler asks (elicitation, sampling, roots): one place for the
in-process client and for :class:`~triomcp.testing.RecordingOutbound`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

__all__ = ["Answers", "InputHandler"]

InputHandler: TypeAlias = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
"""Gets the request's params (``elicitation/create``: ``message``, ``requestedSchema``;
``sampling/createMessage``: ``messages``, ``maxTokens``) and returns the client's result
(``{"action": "accept", "content": {...}}``; a ``CreateMessageResult``); plain or ``async``. In the
legacy era it may raise :class:`~triomcp.errors.McpError` to answer with that error instead."""


class Answers:
    """The client's answering side: a handler per kind of request, and the capabilities they make."""

    def __init__(self, *, elicitation: InputHandler | None = None, sampling: InputHandler | None = None,
                 roots: Sequence[dict[str, Any]] | None = None) -> None:
        self.elicitation = elicitation
        self.sampling = sampling
        self.roots = None if roots is None else [dict(root) for root in roots]

    def capabilities(self) -> dict[str, Any]:
        """What a client with these handlers declares."""
        caps: dict[str, Any] = {}
        if self.elicitation is not None:
            caps["elicitation"] = {}
        if self.sampling is not None:
            caps["sampling"] = {}
        if self.roots is not None:
            caps["roots"] = {}
        return caps

    async def answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The result for one request; LookupError when there is no handler for it."""
        if method == "roots/list" and self.roots is not None:
            return {"roots": [dict(root) for root in self.roots]}
        handler = {"elicitation/create": self.elicitation, "sampling/createMessage": self.sampling}.get(method)
        if handler is None:
            raise LookupError(f"the server asked for {method} and this client has no answer for it "
                              "(pass elicitation=, sampling= or roots=)")
        result = handler(params)
        if inspect.isawaitable(result):
            result = await result
        return dict(result)
