"""The one place where libp2p's exceptions become triomcp's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import trio

from triomcp.errors import DialFailed, PeerError, PeerTimeout

__all__ = ["close_quietly", "map_libp2p_errors", "refused_protocol"]


@contextmanager
def map_libp2p_errors(action: str) -> Iterator[None]:
    """Translate whatever libp2p raises while doing ``action`` (timeouts included)."""
    try:
        yield
    except trio.TooSlowError:
        raise PeerTimeout(f"{action}: timed out") from None
    except PeerError:
        raise
    except Exception as exc:
        from libp2p.network.exceptions import SwarmException

        if isinstance(exc, SwarmException):
            raise DialFailed(f"{action}: {exc}") from exc
        raise PeerError(f"{action}: {type(exc).__name__}: {exc}") from exc


async def close_quietly(stream: Any, *, reset: bool = False) -> None:
    """Close (or reset) a libp2p stream, shielded and bounded, ignoring errors: clean-up only."""
    with trio.CancelScope(shield=True), trio.move_on_after(1), suppress(Exception):
        await (stream.reset() if reset else stream.close())


def refused_protocol(exc: PeerError) -> bool:
    """Did opening a stream fail in protocol negotiation (the peer does not serve that protocol)?"""
    from libp2p.host.exceptions import StreamFailure

    return isinstance(exc.__cause__, StreamFailure)
