"""Circuit relay v2 between real nodes on 127.0.0.1: a relay R (``p2p.relay.service``), a node B
that reserves a slot on it (``p2p.relay.use``), and peers that reach B through R.

Loopback only, so every node could also reach every other directly; the tests dial the relayed
address on purpose (the namespace test, ``tests/reliability/test_nat.py``, has nodes that cannot).
No sleeps: waits look again every 0.05 s under a ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.utils.varint import encode_uvarint
from pydantic import ValidationError

from harness.procs import free_port
from tests.p2p.conftest import authorize, node_in
from triomcp.errors import PeerError, RemoteError
from triomcp.p2p import Node
from triomcp.p2p.circuit import HOP_PROTOCOL, STOP_PROTOCOL, circuit_addr, is_circuit, relay_of
from triomcp.settings import P2PSettings, RelaySettings

R = "12D3KooWRelay"
D = "12D3KooWDest"


async def until(node: Node, done: Callable[[], Any], what: str, seconds: float = 20.0) -> Any:
    """``done()`` (``what``, for the reader) once it is truthy, looked at on each of ``node``'s
    connection events and every 0.05 s, for at most ``seconds``."""
    with trio.fail_after(seconds):
        while not (value := done()):
            with trio.move_on_after(0.05):
                await node.wait_peers_changed()
    return value


def reserved(node: Node) -> list[str]:
    return node.relayed_addrs()


def test_circuit_addresses() -> None:
    addr = circuit_addr(f"/ip4/198.18.0.10/tcp/4001/p2p/{R}", D)
    assert addr == f"/ip4/198.18.0.10/tcp/4001/p2p/{R}/p2p-circuit/p2p/{D}"
    assert is_circuit(addr) and relay_of(addr) == R
    assert relay_of(f"/p2p/{R}/p2p-circuit/p2p/{D}") == R  # how a relayed connection names itself
    assert relay_of(f"/ip4/198.18.0.10/tcp/4001/p2p-circuit/p2p/{D}") is None  # no relay id: never dialable
    assert not is_circuit(f"/ip4/198.18.0.10/tcp/4001/p2p/{R}") and relay_of(f"/ip4/1.2.3.4/tcp/1/p2p/{R}") is None


def test_relay_settings_are_off_by_default_and_checked() -> None:
    relay = P2PSettings().relay
    assert relay.service is False and relay.use == [] and relay.use_bootstrap is False
    assert relay.max_reservations > 0 and relay.circuit_duration > 0 and relay.circuit_bytes > 0
    assert 0 < relay.max_reservations_per_source < relay.max_reservations and relay.max_circuits_per_source > 0
    with pytest.raises(ValidationError, match="not a /p2p-circuit address"):
        RelaySettings(use=[f"/ip4/1.2.3.4/tcp/1/p2p/{R}/p2p-circuit/p2p/{D}"])
    with pytest.raises(ValidationError, match="ending in /p2p/<relay id>"):
        RelaySettings(use=["/ip4/1.2.3.4/tcp/1"])
    with pytest.raises(ValidationError):
        RelaySettings(reservation_ttl=1)


async def test_a_peer_behind_a_relay_is_called_through_it_and_authorization_is_the_end_peers(
        tmp_path: Path) -> None:
    async with (node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r,
                node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b,
                node_in(tmp_path / "a", peer_exchange=False) as a, node_in(tmp_path / "c", peer_exchange=False) as c):
        authorize(r, a, b, c)
        authorize(b, a)  # B lists A, not C, and not R: a relay is never a principal
        authorize(a, b)  # A learns of and dials only peers it lists
        (relayed,) = await until(b, lambda: reserved(b), "B's reservation on R")
        assert relayed == circuit_addr(r.listen_addrs()[0], b.peer_id)
        assert relayed in b.announced_addrs() and relayed not in b.listen_addrs()
        assert list(r.circuits.reservations_held()) == [b.peer_id]
        with trio.fail_after(20):  # B tells R its addresses; R passes the relayed one on to A
            await b.exchange_peers(r.peer_id)
            await a.connect(r.listen_addrs()[0])
            await a.exchange_peers(r.peer_id)
        assert relayed in (a.known.addrs(b.peer_id) if a.known is not None else [])
        await a.host.disconnect(ID.from_base58(b.peer_id))  # the exchange dialed B (directly, on loopback)
        await until(a, lambda: not a.is_connected(b.peer_id), "A disconnected from B")
        with trio.fail_after(20):
            assert await a.connect(relayed) == b.peer_id
            assert (await a.call(b.peer_id, "whoami", {}))["peer_id"] == a.peer_id
        # p2p_peers: each side says the connection is relayed, and through R.
        (entry,) = [p for p in a.known_peers() if p["peer_id"] == b.peer_id]
        assert entry["connected"] and [(c["kind"], c["relay"]) for c in entry["connections"]] == [("relayed", r.peer_id)]
        assert [(c["kind"], c["relay"]) for c in b.connections_to(a.peer_id)] == [("relayed", r.peer_id)]
        assert entry["connections"][0]["streams"] >= 1  # the MCP stream the call took
        assert r.connections_to(a.peer_id)[0]["kind"] == "direct"
        assert r.peer_id in a.relays_in_use()
        # C reaches B through R (R authorizes C), but B does not list C: every call is refused.
        with trio.fail_after(20):
            await c.connect(relayed)
            with pytest.raises(RemoteError, match="not authorized") as refused:
                await c.call(b.peer_id, "whoami", {})
        assert refused.value.code == "not_authorized"
        status = b.relay_status()
        assert status["relayed_addrs"] == [relayed]
        assert status["reservations"][0]["state"] == "reserved"
        assert status["reservations"][0]["expires_in"] > 3000
        assert r.relay_status()["service"]["reservations"].keys() == {b.peer_id}


async def test_the_relay_refuses_unauthorized_peers_and_enforces_its_reservation_limit(tmp_path: Path) -> None:
    async with node_in(tmp_path / "r", relay={"service": True, "max_reservations": 1}, peer_exchange=False) as r:
        use = {"use": [r.listen_addrs()[0]]}
        async with node_in(tmp_path / "x", relay=use, peer_exchange=False) as x:
            state = await until(x, lambda: [s for s in x.relay_status()["reservations"] if s["failures"] >= 1],
                                "X refused")
            assert state[0]["state"] == "refused" and reserved(x) == []
            assert r.circuits.statistics().hop_refused >= 1 and r.circuits.reservations_held() == {}
            async with node_in(tmp_path / "b", relay=use, peer_exchange=False) as b:
                authorize(r, b)
                await until(b, lambda: reserved(b), "B's reservation")
                async with node_in(tmp_path / "c", relay=use, peer_exchange=False) as c:
                    authorize(r, c)  # authorized, but R holds its one reservation already
                    await until(c, lambda: c.relay_status()["reservations"][0]["state"] == "refused", "C refused")
                    assert list(r.circuits.reservations_held()) == [b.peer_id] and reserved(c) == []
            # X is still refused: it was never authorized at R.
            assert x.peer_id not in r.circuits.reservations_held()


async def test_reservations_are_refreshed_and_renewed_after_the_relay_restarts(tmp_path: Path) -> None:
    port = free_port()
    relay_settings = {"relay": {"service": True, "reservation_ttl": 2}, "peer_exchange": False,
                      "listen": [f"/ip4/127.0.0.1/tcp/{port}"]}
    async with node_in(tmp_path / "r", **relay_settings) as r:
        r_addr, r_id = r.listen_addrs()[0], r.peer_id
        async with node_in(tmp_path / "b", relay={"use": [r_addr]}, peer_exchange=False) as b:
            authorize(r, b)
            # A 2 s reservation (the relay truncates its expiry to a whole second) is refreshed at 3/4 of
            # what is left of it, at least 1 s apart, and never lapses meanwhile.
            await until(b, lambda: b.relay_status()["reservations"][0]["reservations"] >= 3, "two refreshes", 30)
            assert list(r.circuits.reservations_held()) == [b.peer_id]
            first = b.relay_status()["reservations"][0]
            assert first["held_for"] >= 1.9 and first["expires_in"] <= 2  # refreshed at least 1 s apart
            await r.aclose()  # the relay goes away: B's slot and relayed address with it
            await until(b, lambda: reserved(b) == [], "B's relayed address withdrawn")
            async with node_in(tmp_path / "r", **relay_settings) as r2:
                assert r2.peer_id == r_id
                await until(b, lambda: reserved(b), "B reserving on the restarted relay", 40)
                assert list(r2.circuits.reservations_held()) == [b.peer_id]
                assert b.relay_status()["reservations"][0]["held_for"] < 10


async def test_direct_addresses_are_dialed_first_and_the_relay_when_they_fail(tmp_path: Path) -> None:
    async with (node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r,
                node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b,
                node_in(tmp_path / "a", peer_exchange=False) as a):
        authorize(r, a, b)
        authorize(b, a)
        authorize(a, b)  # A dials only peers it lists
        (relayed,) = await until(b, lambda: reserved(b), "B's reservation")
        dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{b.peer_id}"  # nobody listens there
        with trio.fail_after(20):
            await a.ensure_connected(b.peer_id, [dead, relayed])
        assert [(c["kind"], c["relay"]) for c in a.connections_to(b.peer_id)] == [("relayed", r.peer_id)]
        await a.host.disconnect(ID.from_base58(b.peer_id))
        await until(a, lambda: not a.is_connected(b.peer_id), "A disconnected from B")
        with trio.fail_after(20):
            await a.ensure_connected(b.peer_id, [b.listen_addrs()[0], relayed])
        assert [c["kind"] for c in a.connections_to(b.peer_id)] == ["direct"]


async def test_hostile_relay_messages_are_refused_and_the_relay_keeps_serving(tmp_path: Path) -> None:
    async with node_in(tmp_path / "r", relay={"service": True}, peer_exchange=False) as r, \
            node_in(tmp_path / "a", peer_exchange=False) as a:
        authorize(r, a)
        with trio.fail_after(20):
            await a.connect(r.listen_addrs()[0])
            # A HOP message claiming 16 MiB: refused (the library's 64 KiB cap), not read.
            stream = await a.host.new_stream(ID.from_base58(r.peer_id), [HOP_PROTOCOL])  # type: ignore[list-item]
            await stream.write(encode_uvarint(16 * 1024 * 1024) + b"\0" * 1024)
            answer = await read_delimited_msg(stream, HopMessage)
            assert answer.status == StatusCode.MALFORMED_MESSAGE
            await stream.reset()
            # A CONNECT to a peer with no reservation here: refused.
            stream = await a.host.new_stream(ID.from_base58(r.peer_id), [HOP_PROTOCOL])  # type: ignore[list-item]
            await write_delimited_msg(stream, HopMessage(type=HopMessage.CONNECT, peer=CircuitPeerId(
                id=ID.from_base58(a.peer_id).to_bytes())))
            answer = await read_delimited_msg(stream, HopMessage)
            assert answer.status == StatusCode.NO_RESERVATION
            await stream.reset()
        async with node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b:
            authorize(r, b)
            await until(b, lambda: reserved(b), "B's reservation after the hostile streams")


async def test_a_relayed_connection_is_accepted_only_through_a_relay_this_node_uses(tmp_path: Path) -> None:
    async with node_in(tmp_path / "x", relay={"service": True}, peer_exchange=False) as x, \
            node_in(tmp_path / "b", peer_exchange=False) as b:
        authorize(b, x)  # even an authorized peer is not a relay B uses
        with trio.fail_after(20):
            await x.connect(b.listen_addrs()[0])

            async def stop_stream() -> None:
                stream = await x.host.new_stream(ID.from_base58(b.peer_id), [STOP_PROTOCOL])  # type: ignore[list-item]
                await write_delimited_msg(stream, StopMessage(type=StopMessage.CONNECT, peer=CircuitPeerId(
                    id=ID.from_base58(x.peer_id).to_bytes())))
                await read_delimited_msg(stream, StopMessage)

            with pytest.raises(Exception):  # noqa: B017 - reset as it opens, or unread and unanswered
                await stop_stream()
        await until(b, lambda: b.circuits.statistics().stop_refused == 1, "B refusing the STOP stream")
        assert [c["kind"] for c in b.connections_to(x.peer_id)] == ["direct"]  # and no relayed one


async def test_a_relayed_connection_over_its_byte_limit_is_reset_and_the_next_call_dials_again(
        tmp_path: Path) -> None:
    async with (node_in(tmp_path / "r", relay={"service": True, "circuit_bytes": 64 * 1024},
                        peer_exchange=False) as r,
                node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b,
                node_in(tmp_path / "a", peer_exchange=False) as a):
        authorize(r, a, b)
        authorize(b, a)
        authorize(a, b)
        (relayed,) = await until(b, lambda: reserved(b), "B's reservation")
        with trio.fail_after(20):
            await a.connect(relayed)
            assert (await a.call(b.peer_id, "echo", {"value": "small"}))["echo"] == "small"
            with pytest.raises(PeerError):  # 200 KB through a relay that carries 64 KiB per connection
                await a.call(b.peer_id, "echo", {"value": "y" * 200_000})
        await until(a, lambda: not a.is_connected(b.peer_id), "the relay resetting the connection")
        with trio.fail_after(20):  # a fresh relayed connection, with a fresh budget
            await a.connect(relayed)
            assert (await a.call(b.peer_id, "echo", {"value": "again"}))["echo"] == "again"


async def test_one_source_address_gets_only_its_share_of_the_reservations(tmp_path: Path) -> None:
    """Every node here connects from 127.0.0.1: one source. With one reservation per source, B's
    slot (refreshed meanwhile) leaves none for C, though R has room for more."""
    relay = {"service": True, "max_reservations_per_source": 1, "reservation_ttl": 2}
    async with (node_in(tmp_path / "r", relay=relay, peer_exchange=False) as r,
                node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b):
        authorize(r, b)
        await until(b, lambda: reserved(b), "B's reservation")
        assert r.circuits.statistics().by_source == {"127.0.0.1": 1}
        async with node_in(tmp_path / "c", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as c:
            authorize(r, c)
            await until(c, lambda: c.relay_status()["reservations"][0]["state"] == "refused", "C refused")
            done = b.relay_status()["reservations"][0]["reservations"]
            await until(b, lambda: b.relay_status()["reservations"][0]["reservations"] >= done + 2, "B's refreshes")
            assert list(r.circuits.reservations_held()) == [b.peer_id] and reserved(c) == []
            assert r.circuits.statistics().source_refused >= 1


async def test_one_source_address_gets_only_its_share_of_the_circuits(tmp_path: Path) -> None:
    """With one HOP stream per source, A's relayed connection to B leaves none for C (also from
    127.0.0.1) until A's closes."""
    async with (node_in(tmp_path / "r", relay={"service": True, "max_circuits_per_source": 1},
                        peer_exchange=False) as r,
                node_in(tmp_path / "b", relay={"use": [r.listen_addrs()[0]]}, peer_exchange=False) as b,
                node_in(tmp_path / "a", peer_exchange=False) as a, node_in(tmp_path / "c", peer_exchange=False) as c):
        authorize(r, a, b, c)
        authorize(b, a, c)
        (relayed,) = await until(b, lambda: reserved(b), "B's reservation")
        await until(r, lambda: r.circuits.statistics().hop_streams == 0, "B's RESERVE stream to close on R")
        with trio.fail_after(20):
            await a.connect(relayed)
            assert (await a.call(b.peer_id, "echo", {"value": "a"}))["echo"] == "a"
            refused = r.circuits.statistics().source_refused
            with pytest.raises(PeerError):
                await c.connect(relayed)
            assert r.circuits.statistics().source_refused == refused + 1
            assert not c.is_connected(b.peer_id)
        await a.host.disconnect(ID.from_base58(b.peer_id))  # A's circuit closes: the slot is free again
        await until(r, lambda: r.circuits.statistics().hop_streams == 0, "A's circuit to close on R")
        with trio.fail_after(20):
            await c.connect(relayed)
            assert (await c.call(b.peer_id, "whoami", {}))["peer_id"] == c.peer_id
