"""The public face of ``triomcp.p2p`` and the layout behind it, pinned: a change to either is a
decision, not an accident (docs/architecture.md draws the layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import triomcp.p2p

P2P = Path(triomcp.p2p.__file__).parent


def test_p2p_facade_is_pinned() -> None:
    assert sorted(triomcp.p2p.__all__) == sorted([
        "CLI_IDENTITY_FILE", "FRONTEND_IDENTITY_FILE", "IDENTITY_FILE", "MCP_PROTOCOL", "AuthorizedPeers",
        "FrameDecoder", "FrameHandler", "Node", "NodeStatistics", "PeerChannel", "encode_frame", "open_node",
        "peer_id_in", "read_announce", "serve_stream",
    ])
    for name in triomcp.p2p.__all__:
        assert hasattr(triomcp.p2p, name)


def test_the_node_is_split_by_concept() -> None:
    """host: the libp2p host's life; node: the Node API; exchange: peer exchange; rpc: MCP
    streams; admit: the sans-I/O admission of each message on them."""
    modules = {p.stem for p in P2P.glob("*.py")}
    assert {"host", "node", "exchange", "rpc", "admit"} <= modules
    assert "libp2p" not in {n.split(".")[0] for n in _imports(P2P / "rpc.py")}  # rpc takes a Stream Protocol


def test_the_admission_rules_import_no_io_library() -> None:
    """``admit`` is sans-I/O (STYLE.md 1): tested synchronously, like h11's ``_state``."""
    assert _imports(P2P / "admit.py") <= {"__future__", "collections.abc", "dataclasses", "typing",
                                          "triomcp.errors", "triomcp.p2p.framing"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
