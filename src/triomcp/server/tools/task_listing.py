"""``taskqueue_list`` over the mesh: the caller's tasks on every node, newest first, with one cursor.

Behind a load balancer a client's tasks are on whichever nodes its submits landed on. Without
``peer``, an HTTP client's ``taskqueue_list`` asks this node's queue and every other node of the
mesh this node knows (:meth:`~triomcp.server.relay.Relay.mesh_peers`) at once, each for the client
as the client (:func:`~triomcp.server.tools.owners.relayed`, with ``peer`` naming that node, which
then lists its own queue: each node sees the principal it would see had the client asked it), and
merges their pages newest first (:func:`merge`, each node's own order kept).

The cursor (:func:`triomcp._cursor.encode_positions`, kind ``m``) holds each node's own queue
cursor by owner tag, ``""`` once that node has no more; a node not in it starts from its newest
task. A node whose page was used in part is asked once more for that part alone, for the cursor
after it. Each round asks every node at once and lasts at most ``p2p.call_timeout``; a node that
does not answer in time, or cannot be reached, is named in ``unreachable`` and the page is
``partial``. It keeps its place in the cursor and is asked again on the next page; the listing
ends (``next_cursor`` null) once no node that answered has more.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from triomcp import _cursor
from triomcp._owner import owner_tag
from triomcp.errors import ProtocolError, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.server.relay import Relay
from triomcp.server.tools.owners import relayed

__all__ = ["CURSOR_KIND", "DONE", "MeshListing", "Page", "advance", "list_mesh", "merge"]

CURSOR_KIND = "m"
DONE = ""
"""A node's position once it has no more tasks for the listing."""


@dataclass(frozen=True)
class Page:
    """One node's answer: its tasks (newest first) and its own cursor after them."""

    tasks: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class MeshListing:
    tasks: list[dict[str, Any]]
    next_cursor: str | None
    unreachable: list[dict[str, str]] = field(default_factory=list)
    """``{peer, error}`` for each node that did not answer (its tasks are not in this page)."""


def merge(pages: Mapping[str, Page], limit: int) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """The newest ``limit`` tasks of ``pages`` (by ``created_at``, then id; each page's own order
    kept) with the name of the page each came from, and how many were taken from each page."""
    rows = [[(name, task) for task in page.tasks] for name, page in pages.items()]
    merged = heapq.merge(*rows, key=lambda row: (row[1].get("created_at") or 0.0, str(row[1].get("id"))),
                         reverse=True)
    taken_rows = [row for _, row in zip(range(limit), merged, strict=False)]
    taken = dict.fromkeys(pages, 0)
    for name, _ in taken_rows:
        taken[name] += 1
    return taken_rows, taken


def advance(position: str | None, page: Page, taken: int, after_part: Page | None) -> str | None:
    """A node's position after this page, from ``position`` (None: its newest task): :data:`DONE`
    once it has no more; unchanged when none of its tasks were taken; else its cursor after the
    last one taken (``after_part``: the node's answer for exactly the part taken, when not all)."""
    if not page.tasks:
        return DONE
    if taken == 0:
        return position
    if taken == len(page.tasks):
        return page.next_cursor or DONE
    assert after_part is not None
    return after_part.next_cursor or DONE


Fetch = Callable[[str | None, int], Awaitable[Page]]


async def _gather(fetches: dict[str, Callable[[], Awaitable[Page]]], deadline: float) -> tuple[
        dict[str, Page], dict[str, str]]:
    """Every fetch at once, until ``deadline``: the pages, and why each other one has none."""
    pages: dict[str, Page] = {}
    errors = dict.fromkeys(fetches, "no answer in time (p2p.call_timeout)")

    async def one(name: str, fetch: Callable[[], Awaitable[Page]]) -> None:
        try:
            pages[name] = await fetch()
            errors.pop(name)
        except (ToolError, ProtocolError) as exc:
            errors[name] = exc.message

    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            for name, fetch in fetches.items():
                nursery.start_soon(one, name, fetch)
    return pages, errors


async def list_mesh(ctx: ToolContext, relay: Relay, client: Mapping[str, str], arguments: dict[str, Any], *,
                    cursor: str | None, limit: int, local: Fetch) -> MeshListing:
    """The caller's tasks over the mesh (see the module); ``arguments`` are the listing's filters,
    ``local(cursor, limit)`` this node's own page."""
    node = relay.node()
    assert node is not None
    try:
        positions = _cursor.decode_positions(CURSOR_KIND, cursor) if cursor is not None else {}
    except ValueError as exc:
        raise ToolError(str(exc), code="invalid_cursor") from None
    peers = {owner_tag(peer): peer for peer in relay.mesh_peers()}
    own = owner_tag(node.peer_id)
    budget = node.settings.call_timeout

    def fetch(tag: str, position: str | None, count: int) -> Callable[[], Awaitable[Page]]:
        if tag == own:
            return lambda: local(position, count)

        async def remote() -> Page:
            asked = {**arguments, "limit": count, "peer": peers[tag], **({"cursor": position} if position else {})}
            data = await relayed(ctx, relay, client, peers[tag], "taskqueue_list", asked)
            return Page(list(data.get("tasks") or []), data.get("next_cursor"))

        return remote

    asked = {tag: positions.get(tag) for tag in [own, *peers] if positions.get(tag) != DONE}
    pages, errors = await _gather({tag: fetch(tag, at, limit) for tag, at in asked.items()},
                                  trio.current_time() + budget)
    rows, taken = merge(pages, limit)
    parts = {tag: n for tag, n in taken.items() if 0 < n < len(pages[tag].tasks)}
    after, _ = await _gather({tag: fetch(tag, asked[tag], n) for tag, n in parts.items()},
                             trio.current_time() + budget)

    def began_alike(tag: str) -> bool:
        return [t.get("id") for t in after[tag].tasks] == [t.get("id") for t in pages[tag].tasks[:parts[tag]]]

    # A node not asked again in time, or whose tasks changed meanwhile, keeps its place: its tasks
    # come on the next page instead (nothing is skipped, nothing comes twice).
    deferred = {tag for tag in parts if tag not in after or not began_alike(tag)}
    moved = {tag: advance(asked[tag], page, 0 if tag in deferred else taken[tag], after.get(tag))
             for tag, page in pages.items()}
    now = {tag: moved.get(tag, at) for tag, at in asked.items()}  # a node that did not answer stays
    now.update({tag: DONE for tag in [own, *peers] if positions.get(tag) == DONE})
    more = any(at != DONE for at in moved.values())
    unreachable = [{"peer": peers.get(tag, node.peer_id), "error": why} for tag, why in sorted(errors.items())]
    return MeshListing([task for tag, task in rows if tag not in deferred],
                       _cursor.encode_positions(CURSOR_KIND, {t: at for t, at in now.items() if at is not None})
                       if more else None, unreachable)
