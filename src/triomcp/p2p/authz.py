"""Who may talk to this node: the ``authorized_peers`` file, like SSH's authorized_keys.

One peer id per line, optionally followed by a label, optionally preceded by options (only
``delegate`` so far); ``#`` starts a comment::

    12D3KooWQeXUU4zsCapeoMmAcCMxN9HAMrAj2PaiyPYaGtG6vB3K  worker-2 (rack 4)
    delegate 12D3KooWRphAC3iqnT5r9ovKNpmrov1e4kRF14Q82TvqZts6j2ru  front-1 (vouches for its callers)

The principal is the peer id that Noise authenticated; a peer not listed gets "not authorized" for
every request and nothing changes. The file is re-read when it changes (its mtime, looked at at most
once a second), so an edit takes effect at once; :attr:`AuthorizedPeers.on_revoked` hears who left.

Forwarded requests (docs/security.md, "Forwarding and delegation"). A node that calls a peer
for one of its own callers names that caller in ``_meta`` (``triomcp/onBehalfOf``); the peer's
principal is then ``peer:<node>|<caller>``, and a caller that is itself a peer is
``peer:<id>|...`` again, so the principal is the chain of peers a request came through, nearest
first, ending in a name the first node gave its caller (``token:alice``, ``oauth:<sub>``,
``local``). :func:`forwarding_refusal` is the rule for that chain: every peer it names must be
authorized here too, unless the peer that sent the request is a ``delegate``. A name that is not
a peer (an HTTP principal of the sending node) is that node's own business: this node cannot
verify it, and the principal keeps it apart under the sending node's peer id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from libp2p.peer.id import ID

from triomcp.errors import ConfigError

__all__ = ["DELEGATE", "MAX_FORWARDING_HOPS", "AuthorizedPeers", "Entry", "callers_named", "forwarding_refusal",
           "on_behalf_of", "parse_line", "peer_principal", "validate_peer_id"]

DELEGATE = "delegate"
"""The option that lets a peer act for others: this node takes its word for whom it forwards."""
OPTIONS = frozenset({DELEGATE})
"""Options a line may start with (each must hold a character base58 never uses, such as ``l``)."""
MAX_FORWARDING_HOPS = 8
"""At most this many peers before the one that sent a request (a longer chain is refused)."""
PEER_PREFIX = "peer:"


def validate_peer_id(peer_id: str) -> str:
    try:
        if not peer_id:
            raise ValueError("it is empty")
        ID.from_base58(peer_id)
    except Exception as exc:
        raise ConfigError(f"{peer_id!r} is not a peer id: {exc}") from None
    return peer_id


# -- principals of requests from peers, and the rule for forwarded ones (pure) ---------------

def peer_principal(peer_id: str, on_behalf_of: str | None = None) -> str:
    """The principal of a request that arrived from ``peer_id`` (acting for ``on_behalf_of``)."""
    return f"{PEER_PREFIX}{peer_id}" if not on_behalf_of else f"{PEER_PREFIX}{peer_id}|{on_behalf_of}"


def _first_peer(principal: str) -> tuple[str, str | None] | None:
    """``(peer id, the rest)`` of ``peer:<id>|<rest>`` (rest None when there is none); None when the
    principal does not start with a peer."""
    if not principal.startswith(PEER_PREFIX):
        return None
    peer_id, sep, rest = principal[len(PEER_PREFIX):].partition("|")
    return peer_id, (rest if sep else None)


def callers_named(on_behalf_of: str | None) -> tuple[str, ...]:
    """The peers an on-behalf-of principal names, nearest first: ``peer:A|peer:B|token:x`` -> (A, B).

    Only leading ``peer:<id>|`` parts count; what follows the first other part is a name the first
    node gave its caller (HTTP principals never start with ``peer:``). Raises ValueError when a
    part that starts with ``peer:`` does not hold a peer id, or the chain is too long.
    """
    peers: list[str] = []
    rest = on_behalf_of
    while rest and (first := _first_peer(rest)) is not None:
        peer_id, rest = first
        try:
            validate_peer_id(peer_id)
        except ConfigError:
            raise ValueError(f"{peer_id[:60]!r} is not a peer id") from None
        peers.append(peer_id)
        if len(peers) > MAX_FORWARDING_HOPS:
            raise ValueError(f"the request came through more than {MAX_FORWARDING_HOPS} peers")
    return tuple(peers)


def forwarding_refusal(
    sender: str,
    on_behalf_of: str | None,
    *,
    authorized: Callable[[str], bool],
    delegate: Callable[[str], bool],
) -> str | None:
    """Why a request from ``sender`` (already authorized: the stream refuses everyone else) that acts
    for ``on_behalf_of`` may not run here; None when it may.

    The rule: a request that names no peer behind ``sender`` is ``sender``'s own. One that names
    peers runs only if every one of them is ``authorized`` here as well, or ``sender`` is a
    ``delegate`` (this node then takes its word for everyone behind it). What a peer that is not a
    delegate claims can only narrow what it may do, never widen it. A malformed chain is refused.
    """
    try:
        callers = callers_named(on_behalf_of)
    except ValueError as exc:
        return f"not authorized: peer {sender} forwarded a request with a malformed caller chain: {exc}"
    if not callers or delegate(sender):
        return None
    for caller in callers:
        if not authorized(caller):
            return (f"not authorized: peer {caller} is not in authorized_peers here, and peer {sender}, "
                    f"which forwarded its request, is not a delegate (authorize {caller}, or mark "
                    f"{sender} as a delegate: triomcp peers authorize {sender} --delegate)")
    return None


def on_behalf_of(principal: str | None, *, is_local: Callable[[str], bool]) -> str:
    """What a node sends as ``triomcp/onBehalfOf`` when it calls a peer for a caller with ``principal``.

    The principal as it is (``local`` for none), except that a caller on one of this node's own
    identities (its CLI, its HTTP front end: :meth:`AuthorizedPeers.is_local`) is this node
    itself: that first hop is left out, so the peer sees the front end's HTTP principal, or this
    node acting for itself, rather than a peer it never authorized.
    """
    if not principal:
        return "local"
    first = _first_peer(principal)
    if first is not None and is_local(first[0]):
        return first[1] or "local"
    return principal


# -- the file ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    peer_id: str
    label: str
    delegate: bool = False
    """May act for others: this node takes its word for the peers it forwards requests for."""

    def line(self) -> str:
        return f"{DELEGATE + ' ' if self.delegate else ''}{self.peer_id} {self.label}".rstrip()


def parse_line(raw: str) -> Entry | None:
    """One line of the file, ``[options] <peer id> [label]``; None for a blank or comment line.

    Options (comma-separated, before the id as in SSH's authorized_keys, so no older line can be
    read as one: each holds an ``l``, which base58 never does) are only :data:`OPTIONS`; anything
    else is a ConfigError, never silently ignored.
    """
    words = raw.split("#", 1)[0].split(None, 1)
    if not words:
        return None
    options: set[str] = set()
    if len(words) == 2 and set(words[0].split(",")) <= OPTIONS:
        options = set(words[0].split(","))
        words = words[1].split(None, 1)
    try:
        validate_peer_id(words[0])
    except ConfigError as exc:
        raise ConfigError(f"{exc} (a line is '[{','.join(sorted(OPTIONS))}] <peer id> [label]')") from None
    return Entry(words[0], words[1].strip() if len(words) > 1 else "", delegate=DELEGATE in options)


class AuthorizedPeers:
    def __init__(self, path: Path, *, always: set[str] | None = None, local_keys: list[Path] | None = None) -> None:
        self.path = path
        self.always = set(always or ())
        """Peers allowed without a line in the file."""
        self.local_keys = list(local_keys or [])
        """Identities in this node's data dir (the CLI's, an HTTP front end's): whoever can read the
        data dir is the operator of this machine and is always allowed."""
        self._mtime: float | None = None
        self._checked_at = -1.0
        self._entries: dict[str, Entry] = {}
        self.on_revoked: list[Callable[[str], None]] = []
        """Told each peer id that leaves the file (``revoke``, or an edit seen on a re-read) and is no
        local identity; called from :meth:`is_authorized` and the like: it must not raise or block."""

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < 1.0:
            return
        self._checked_at = now
        self._load_local_keys()
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._replace({}, None)
            return
        if mtime == self._mtime and not force:
            return
        entries: dict[str, Entry] = {}
        for number, raw in enumerate(self.path.read_text().splitlines(), 1):
            try:
                entry = parse_line(raw)
            except ConfigError as exc:
                raise ConfigError(f"{self.path}:{number}: {exc}") from None
            if entry is not None:
                entries[entry.peer_id] = entry
        self._replace(entries, mtime)

    def _replace(self, entries: dict[str, Entry], mtime: float | None) -> None:
        gone = sorted(self._entries.keys() - entries.keys() - self.always)
        self._entries, self._mtime = entries, mtime
        for peer_id in gone:
            for listener in list(self.on_revoked):
                listener(peer_id)

    def _load_local_keys(self) -> None:
        for key in [k for k in self.local_keys if k.exists()]:
            from triomcp.p2p.identity import load_or_create_identity, peer_id_of

            self.always.add(peer_id_of(load_or_create_identity(key)))
            self.local_keys.remove(key)

    def is_authorized(self, peer_id: str) -> bool:
        if peer_id in self.always:
            return True
        self._reload()
        if peer_id not in self._entries and self.local_keys:
            # A local identity made since the last look (the CLI's first run): not a second later.
            self._load_local_keys()
        return peer_id in self._entries or peer_id in self.always

    def is_listed(self, peer_id: str) -> bool:
        """In the file itself (not just allowed implicitly, like the local CLI)."""
        self._reload()
        return peer_id in self._entries

    def is_delegate(self, peer_id: str) -> bool:
        """Listed with the ``delegate`` option: may act for peers this node does not authorize."""
        self._reload()
        entry = self._entries.get(peer_id)
        return entry is not None and entry.delegate

    def is_local(self, peer_id: str) -> bool:
        """One of this node's own identities (its CLI's, its HTTP front end's): allowed without a line."""
        self._reload()
        return peer_id in self.always

    def entries(self) -> list[Entry]:
        self._reload(force=True)
        return sorted(self._entries.values(), key=lambda e: e.peer_id)

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        self._reload(force=True)

    def _lines_of(self, peer_id: str) -> tuple[list[str], dict[int, Entry]]:
        """The file's lines, and the entries of those that name ``peer_id``, by line index."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        entries = {i: parse_line(line) for i, line in enumerate(lines)}
        return lines, {i: e for i, e in entries.items() if e is not None and e.peer_id == peer_id}

    def authorize(self, peer_id: str, label: str = "", *, delegate: bool | None = None) -> bool:
        """Add a peer (atomically rewriting the file), as a delegate if ``delegate``; for a peer already
        there, ``delegate`` True or False sets that option on its line (None leaves it). False when
        nothing changed."""
        validate_peer_id(peer_id)
        self._reload(force=True)
        existing = self._entries.get(peer_id)
        if existing is not None:
            if delegate is None or existing.delegate == delegate:
                return False
            lines, found = self._lines_of(peer_id)
            for i, entry in found.items():
                _, mark, comment = lines[i].partition("#")
                updated = Entry(entry.peer_id, entry.label, delegate=delegate).line()
                lines[i] = f"{updated}  {mark}{comment}" if mark else updated  # its comment kept
            self._write(lines)
            return True
        lines = self.path.read_text().splitlines() if self.path.exists() else [
            "# Peers allowed to submit, claim, complete and call tools on this node.",
            "# One base58 peer id per line, then an optional label; 'delegate <peer id> ...' also lets",
            "# that peer act for peers this node does not list (docs/security.md).",
        ]
        lines.append(Entry(peer_id, label, delegate=bool(delegate)).line())
        self._write(lines)
        return True

    def revoke(self, peer_id: str) -> bool:
        self._reload(force=True)
        if peer_id not in self._entries or not self.path.exists():
            return False
        lines, found = self._lines_of(peer_id)
        self._write([line for i, line in enumerate(lines) if i not in found])
        return True
