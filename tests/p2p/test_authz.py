"""The authorized_peers file and the rule for forwarded requests: synchronous, no node, no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair

from triomcp.errors import ConfigError
from triomcp.p2p.authz import (
    MAX_FORWARDING_HOPS,
    AuthorizedPeers,
    Entry,
    callers_named,
    forwarding_refusal,
    on_behalf_of,
    parse_line,
    peer_principal,
)
from triomcp.p2p.identity import peer_id_of

A, R, R2, B = (peer_id_of(create_new_key_pair()) for _ in range(4))


# -- the file format -------------------------------------------------------------------------

def test_lines_old_and_new() -> None:
    assert parse_line(f"{A}") == Entry(A, "")
    assert parse_line(f"{A} worker-2 (rack 4)  # a comment") == Entry(A, "worker-2 (rack 4)")
    assert parse_line(f"{A}\tlabel") == Entry(A, "label")
    assert parse_line(f"delegate {R} front-1") == Entry(R, "front-1", delegate=True)
    assert parse_line(f"  delegate   {R}") == Entry(R, "", delegate=True)
    assert parse_line("   # only a comment") is None and parse_line("") is None
    # A label that happens to be the word is a label: options come before the id.
    assert parse_line(f"{A} delegate") == Entry(A, "delegate", delegate=False)


@pytest.mark.parametrize("line, says", [
    ("12D3KooW-typo label", "'12D3KooW-typo' is not a peer id"),
    (f"delegat {A}", "'delegat' is not a peer id"),
    (f"relay {A}", "'relay' is not a peer id"),
    ("delegate", "'delegate' is not a peer id"),
    ("delegate not-an-id", "'not-an-id' is not a peer id"),
])
def test_a_bad_line_is_refused_and_says_what_a_line_is(line: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        parse_line(line)
    assert "[delegate] <peer id> [label]" in str(refused.value)


def test_the_file_names_the_line_of_an_error(tmp_path: Path) -> None:
    path = tmp_path / "authorized_peers"
    path.write_text(f"{A} a\nrelay {R}\n")
    with pytest.raises(ConfigError, match=r"authorized_peers:2: 'relay' is not a peer id"):
        AuthorizedPeers(path).entries()


def test_authorize_a_delegate_then_change_the_option_in_place(tmp_path: Path) -> None:
    path = tmp_path / "authorized_peers"
    peers = AuthorizedPeers(path)
    assert peers.authorize(A, "plain") and peers.authorize(R, "front-1", delegate=True)
    assert peers.is_authorized(R) and peers.is_delegate(R) and not peers.is_delegate(A)
    assert f"delegate {R} front-1" in path.read_text().splitlines()
    assert not peers.authorize(R) and not peers.authorize(R, delegate=True)  # nothing to change
    path.write_text(path.read_text().replace(f"{A} plain", f"{A} plain  # kept"))
    assert peers.authorize(A, delegate=True)  # an existing line gains the option, keeps label and comment
    assert f"delegate {A} plain  # kept" in path.read_text().splitlines()
    assert peers.authorize(R, delegate=False) and not peers.is_delegate(R) and peers.is_authorized(R)
    assert f"{R} front-1" in path.read_text().splitlines()
    assert peers.revoke(A) and not peers.is_authorized(A) and A not in path.read_text()
    assert [e.peer_id for e in AuthorizedPeers(path).entries()] == [R]  # a fresh reader agrees


def test_local_identities_are_allowed_and_local_but_not_listed_or_delegates(tmp_path: Path) -> None:
    peers = AuthorizedPeers(tmp_path / "authorized_peers", always={A})
    assert peers.is_authorized(A) and peers.is_local(A)
    assert not peers.is_listed(A) and not peers.is_delegate(A) and not peers.is_local(B)


# -- principals and the rule for forwarded requests --------------------------------------------

def test_a_principal_is_the_chain_of_peers_nearest_first() -> None:
    on_r = peer_principal(A, "token:alice")  # A's HTTP caller alice, calling R's tools through A
    assert on_r == f"peer:{A}|token:alice"
    on_b = peer_principal(R, on_r)  # ... which R forwards to B
    assert on_b == f"peer:{R}|peer:{A}|token:alice"
    assert callers_named(on_r) == (A,) and callers_named(on_b) == (R, A)
    assert peer_principal(A) == f"peer:{A}" and callers_named(f"peer:{A}") == (A,)
    for own in (None, "", "local", "token:alice", "oauth:sub|peer:x", f"token:peer:{A}"):
        assert callers_named(own) == ()  # names the sender gave its own HTTP callers


def test_malformed_or_overlong_chains_are_refused_even_from_a_delegate() -> None:
    for bad in ("peer:not-a-peer|local", f"peer:{A}|peer:|local",
                "|".join([f"peer:{A}"] * (MAX_FORWARDING_HOPS + 1)) + "|local"):
        refusal = forwarding_refusal(R, bad, authorized=lambda p: True, delegate=lambda p: True)
        assert refusal is not None and refusal.startswith(f"not authorized: peer {R} forwarded a request with a "
                                                          "malformed caller chain")
    assert callers_named("|".join([f"peer:{A}"] * MAX_FORWARDING_HOPS)) == (A,) * MAX_FORWARDING_HOPS


# (authorized here, delegates here, sender, on behalf of) -> allowed
RULE = [
    ({R}, set(), R, None, True),                                   # R's own request
    ({R}, set(), R, "local", True),                                # R's anonymous HTTP caller
    ({R}, set(), R, "token:alice", True),                          # R's HTTP caller: R vouches, B cannot check
    ({R}, set(), R, f"peer:{A}|local", False),                     # A through R: the laundering case
    ({R}, set(), R, f"peer:{A}", False),
    ({R, A}, set(), R, f"peer:{A}|token:x", True),                 # A is authorized here itself
    ({R}, {R}, R, f"peer:{A}|token:x", True),                      # R is a delegate: its word is taken
    ({R}, {R}, R, f"peer:{R2}|peer:{A}|local", True),              # ... for everyone behind it
    ({R, R2}, set(), R, f"peer:{R2}|peer:{A}|local", False),       # every peer named must be authorized
    ({R, R2, A}, set(), R, f"peer:{R2}|peer:{A}|local", True),
    ({R, R2}, {R2}, R, f"peer:{R2}|peer:{A}|local", False),        # only the sender's delegation counts
]


@pytest.mark.parametrize("authorized, delegates, sender, behalf, allowed", RULE)
def test_the_rule(authorized: set[str], delegates: set[str], sender: str, behalf: str | None,
                  allowed: bool) -> None:
    refusal = forwarding_refusal(sender, behalf, authorized=authorized.__contains__,
                                 delegate=delegates.__contains__)
    assert (refusal is None) is allowed, refusal


def test_the_refusal_names_the_peer_the_forwarder_and_the_fix() -> None:
    refusal = forwarding_refusal(R, f"peer:{A}|local", authorized={R}.__contains__, delegate=lambda p: False)
    assert refusal == (f"not authorized: peer {A} is not in authorized_peers here, and peer {R}, which "
                       f"forwarded its request, is not a delegate (authorize {A}, or mark {R} as a delegate: "
                       f"triomcp peers authorize {R} --delegate)")


def test_what_a_forwarding_node_sends_for_its_caller() -> None:
    local = {A}.__contains__  # A is this node's own CLI or HTTP front end
    assert on_behalf_of(None, is_local=local) == "local"
    assert on_behalf_of("token:alice", is_local=local) == "token:alice"
    assert on_behalf_of(f"peer:{B}|token:alice", is_local=local) == f"peer:{B}|token:alice"  # a peer: named
    assert on_behalf_of(f"peer:{A}|token:alice", is_local=local) == "token:alice"  # the front end's caller
    assert on_behalf_of(f"peer:{A}", is_local=local) == "local"  # the CLI: this node itself
    assert on_behalf_of(f"peer:{B}|peer:{A}|x", is_local=local) == f"peer:{B}|peer:{A}|x"  # only the first hop
