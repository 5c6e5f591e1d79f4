"""A stop-gap for py-libp2p < 0.8.2: multistream-select reads capped at 64 KiB.

**GHSA-hmjq-g7pp-rw3x** (pre-authentication memory exhaustion, fixed in py-libp2p 0.8.2):
multistream-select reads each message with ``libp2p.utils.varint.read_delim``, which decodes a
varint length with no cap and fills one buffer of that length. It is the first thing a node
reads from a new TCP connection, before Noise: one raw connection that claimed 2^30 bytes and
streamed 200 MiB grew a node by ~200 MiB for the 10 s of libp2p's upgrade timeout; eight in
parallel by 1.6 GiB (docs/security.md has the figures).

The narrowest point is the one caller: ``MultiselectCommunicator.read`` (every multistream
negotiation: security and muxer on a connection, the protocol of every stream) calls the name
``read_delim`` bound in ``libp2p.protocol_muxer.multiselect_communicator``. :func:`apply`
rebinds that name to :func:`bounded_read_delim`, which runs the library's own ``read_delim`` on
a reader that refuses to read a message body longer than :data:`MAX_MESSAGE_BYTES` (64 KiB,
the cap of the upstream fix) with the library's own ``MessageTooLarge``. The communicator turns
that, like any ``IOException``, into ``MultiselectCommunicatorError``: the negotiation fails and
libp2p closes the connection as it does for any failed upgrade. Nothing is copied from the
library; nothing else changes.

**Delete this module** (and its call in ``node.py`` and ``tests/p2p/test_hardening.py``'s unit
tests of it) once ``pyproject.toml`` requires ``libp2p>=0.8.2``. Until then :func:`apply` is a
no-op on 0.8.2 or later, so upgrading first is safe.
"""

from __future__ import annotations

import logging
import re
from importlib.metadata import PackageNotFoundError, version

from libp2p.io.abc import Reader
from libp2p.io.exceptions import MessageTooLarge
from libp2p.protocol_muxer import multiselect_communicator
from libp2p.utils.varint import read_delim as _library_read_delim

__all__ = ["ADVISORY", "FIXED_IN", "MAX_MESSAGE_BYTES", "apply", "bounded_read_delim", "installed_version",
           "is_applied", "needed"]

log = logging.getLogger("triomcp.p2p")

ADVISORY = "GHSA-hmjq-g7pp-rw3x"
FIXED_IN = (0, 8, 2)
MAX_MESSAGE_BYTES = 64 * 1024
"""The largest multistream-select message body read (the upstream fix's cap)."""
_MAX_VARINT_BYTES = 10


class _CappedReader(Reader):
    """A reader that refuses a read of more than ``MAX_MESSAGE_BYTES`` at once or in total
    (plus a varint's ten bytes), before reading anything: ``read_delim`` asks for the whole
    claimed length in one read, so a huge length prefix is refused as soon as it is decoded."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._left = MAX_MESSAGE_BYTES + _MAX_VARINT_BYTES

    async def read(self, n: int | None = None) -> bytes:
        if n is None or n > MAX_MESSAGE_BYTES or n > self._left:
            raise MessageTooLarge(f"multistream-select message longer than {MAX_MESSAGE_BYTES} bytes "
                                  f"refused ({ADVISORY})")
        data = await self._reader.read(n)
        self._left -= len(data)
        return data


async def bounded_read_delim(reader: Reader) -> bytes:
    """The library's ``read_delim``, refusing (``MessageTooLarge``) a message over 64 KiB."""
    return await _library_read_delim(_CappedReader(reader))


def _release(text: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


def installed_version() -> str:
    try:
        return version("libp2p")
    except PackageNotFoundError:
        return "(unknown version)"


def needed(installed: str | None = None) -> bool:
    """Whether the installed py-libp2p (or ``installed``) predates the fix; unknown means yes."""
    release = _release(installed_version() if installed is None else installed)
    return release is None or release < FIXED_IN


def is_applied() -> bool:
    return getattr(multiselect_communicator, "read_delim", None) is bounded_read_delim


def apply() -> bool:
    """Cap multistream-select reads if the installed py-libp2p needs it; True if the cap is on.

    Idempotent: the first call that applies it logs so once; later calls change nothing."""
    if is_applied():
        return True
    if not needed():
        log.debug("py-libp2p %s has the fix for %s: multistream reads left as they are", installed_version(),
                  ADVISORY)
        return False
    setattr(multiselect_communicator, "read_delim", bounded_read_delim)  # noqa: B010 - a module global
    log.info("py-libp2p %s < %s: multistream-select reads capped at %d bytes (%s)", installed_version(),
             ".".join(map(str, FIXED_IN)), MAX_MESSAGE_BYTES, ADVISORY)
    return True
