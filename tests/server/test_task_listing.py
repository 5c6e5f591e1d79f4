"""The mesh listing's sans-I/O parts, synchronously: the merge of node pages, each node's next
position, and the cursor of several positions (the one codec, triomcp._cursor)."""

from __future__ import annotations

from typing import Any

import pytest

from triomcp import _cursor
from triomcp.server.tools.task_listing import CURSOR_KIND, DONE, Page, advance, merge


def _task(name: str, at: float) -> dict[str, Any]:
    return {"id": name, "created_at": at}


def test_merge_takes_the_newest_across_pages_and_keeps_each_pages_order() -> None:
    pages = {"a": Page([_task("a3", 9.0), _task("a2", 5.0), _task("a1", 1.0)], "ca"),
             "b": Page([_task("b2", 7.0), _task("b1", 6.0)], None),
             "c": Page([], None)}
    rows, taken = merge(pages, 3)
    assert [(tag, t["id"]) for tag, t in rows] == [("a", "a3"), ("b", "b2"), ("b", "b1")]
    assert taken == {"a": 1, "b": 2, "c": 0}
    rows, taken = merge(pages, 50)
    assert [t["id"] for _, t in rows] == ["a3", "b2", "b1", "a2", "a1"] and taken == {"a": 3, "b": 2, "c": 0}
    # A page out of time order (a node's clock stepped back) keeps its own order: nothing is skipped.
    skewed = {"a": Page([_task("new", 1.0), _task("old", 8.0)], None), "b": Page([_task("b", 5.0)], None)}
    assert [t["id"] for _, t in merge(skewed, 3)[0]] == ["b", "new", "old"]


def test_a_nodes_next_position() -> None:
    page = Page([_task("x", 2.0), _task("y", 1.0)], "after-y")
    assert advance(None, Page([], None), 0, None) == DONE  # nothing there: done
    assert advance("p", page, 0, None) == "p"  # nothing taken: where it was
    assert advance(None, page, 0, None) is None  # ... its newest, still
    assert advance("p", page, 2, None) == "after-y"  # all taken: the node's own cursor
    assert advance("p", Page(page.tasks, None), 2, None) == DONE  # ... and none: done
    assert advance("p", page, 1, Page([_task("x", 2.0)], "after-x")) == "after-x"  # a part: after that part


def test_a_cursor_of_positions_round_trips_and_refuses_anything_else() -> None:
    positions = {"abcdefgh": _cursor.encode("s", 41), "ijklmnop": DONE}
    cursor = _cursor.encode_positions(CURSOR_KIND, positions)
    assert _cursor.decode_positions(CURSOR_KIND, cursor) == positions
    for bad in (_cursor.encode("s", 3), _cursor.encode_positions("o", positions), "%%%", "",
                _cursor.encode_positions(CURSOR_KIND, {str(i): "" for i in range(_cursor.MAX_POSITIONS + 1)})):
        with pytest.raises(ValueError):
            _cursor.decode_positions(CURSOR_KIND, bad)
    with pytest.raises(ValueError):
        _cursor.decode("s", cursor)  # nor is it the queue's own cursor
