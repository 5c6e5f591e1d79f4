"""Leaving an exit stack that holds nurseries without wrapping the block's own exception in a group."""

from __future__ import annotations

import contextlib
from types import TracebackType

__all__ = ["exit_stack"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def exit_stack(stack: contextlib.AsyncExitStack, etype: type[BaseException] | None,
                     exc: BaseException | None, tb: TracebackType | None) -> bool:
    """``stack.__aexit__``; when the only error is the block's own exception (a nursery wrapped it in
    an ExceptionGroup), the exception goes on as it was: a failed ``assert`` in a test stays one."""
    try:
        return bool(await stack.__aexit__(etype, exc, tb))
    except BaseExceptionGroup as group:
        if exc is not None and _leaves(group) == [exc]:
            return False
        raise
