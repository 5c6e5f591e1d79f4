"""Ids that name the node holding them: ``<tag>.<random part>``.

Legacy session ids, task ids and ``requestState`` tokens minted by a node of a mesh start with
that node's *owner tag*: 8 characters (a-z, 2-7) of the base32 SHA-256 of its peer id. Behind a
load balancer, whichever node a request lands on reads the tag and has the owner serve it over
the mesh (:mod:`triomcp.server.relay`). The tag tells nothing but which node of the mesh holds
the id (it is a digest: not the peer id, no address); the random part keeps the id unguessable.
A client that forges a tag at most sends its request to another node of the same mesh, which
authenticates it again and answers "not found". Ids without a tag (a node without libp2p, ids
minted before tags existed) are served where they land.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["TAG_LENGTH", "owner_tag", "tag_of", "tagged"]

TAG_LENGTH = 8
_TAGGED = re.compile(r"([a-z2-7]{8})\.")


def owner_tag(peer_id: str) -> str:
    """The tag of the node with this peer id."""
    digest = hashlib.sha256(b"triomcp owner tag\x00" + peer_id.encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:TAG_LENGTH]


def tagged(tag: str, rest: str) -> str:
    """``rest`` with the owner tag in front (as it is when the node has no tag)."""
    return f"{tag}.{rest}" if tag else rest


def tag_of(value: object) -> str | None:
    """The owner tag an id starts with, if it has one."""
    if not isinstance(value, str):
        return None
    match = _TAGGED.match(value)
    return match.group(1) if match else None
