"""The libp2p node: identity, dialing and discovery, authorization, MCP over libp2p streams.

It knows nothing of HTTP.
"""

from triomcp.p2p.authz import AuthorizedPeers
from triomcp.p2p.discovery import peer_id_in, read_announce
from triomcp.p2p.framing import FrameDecoder, encode_frame
from triomcp.p2p.host import open_node
from triomcp.p2p.identity import CLI_IDENTITY_FILE, FRONTEND_IDENTITY_FILE, IDENTITY_FILE
from triomcp.p2p.node import Node, NodeStatistics
from triomcp.p2p.rpc import MCP_PROTOCOL, FrameHandler, PeerChannel, serve_stream

__all__ = [
    "CLI_IDENTITY_FILE",
    "FRONTEND_IDENTITY_FILE",
    "IDENTITY_FILE",
    "MCP_PROTOCOL",
    "AuthorizedPeers",
    "FrameDecoder",
    "FrameHandler",
    "Node",
    "NodeStatistics",
    "PeerChannel",
    "encode_frame",
    "open_node",
    "peer_id_in",
    "read_announce",
    "serve_stream",
]
