"""Before authentication: the multistream read cap (GHSA-hmjq-g7pp-rw3x), the admission gate, yamux only.

Units of ``triomcp.p2p.hardening`` and ``triomcp.p2p.admission``, and real hosts on 127.0.0.1. The
attacks on a real node process (memory, deadlines, a thousand connections) are in
``tests/reliability/test_preauth.py``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import multiaddr as ma
import pytest
import trio
import trio.testing
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.abc import Reader, ReadWriteCloser
from libp2p.io.exceptions import MessageTooLarge
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import encode_uvarint
from libp2p.utils.varint import read_delim as library_read_delim

from tests.p2p.conftest import node_in
from triomcp.p2p import hardening
from triomcp.p2p.admission import InboundGate, source_of


class BytesReader(Reader):
    """A reader over fixed bytes that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int | None] = []

    async def read(self, n: int | None = None) -> bytes:
        self.asked.append(n)
        size = len(self.data) if n is None else n
        out, self.data = self.data[:size], self.data[size:]
        return out


# -- the multistream read cap ----------------------------------------------------------------
async def test_bounded_read_delim_refuses_a_huge_length_before_reading_the_body() -> None:
    reader = BytesReader(encode_uvarint(2**30) + b"x" * 100_000)
    with pytest.raises(MessageTooLarge, match="GHSA-hmjq-g7pp-rw3x"):
        await hardening.bounded_read_delim(reader)
    assert max(n or 0 for n in reader.asked) == 1  # only the varint's bytes, one at a time, were read
    # The library's own read asks for the whole claimed gigabyte at once (what the cap stops).
    unbounded = BytesReader(encode_uvarint(2**30) + b"x" * 100)
    with pytest.raises(Exception):  # noqa: B017 - the stream ends short; the size asked for matters
        await library_read_delim(unbounded)
    assert 2**30 in unbounded.asked


async def test_bounded_read_delim_reads_messages_up_to_64_kib_as_the_library_does() -> None:
    hello = b"/multistream/1.0.0\n"
    assert await hardening.bounded_read_delim(BytesReader(encode_uvarint(len(hello)) + hello)) == hello[:-1]
    largest = b"p" * (hardening.MAX_MESSAGE_BYTES - 1) + b"\n"
    assert await hardening.bounded_read_delim(BytesReader(encode_uvarint(len(largest)) + largest)) == largest[:-1]
    with pytest.raises(MessageTooLarge):
        over = largest + b"\n"
        await hardening.bounded_read_delim(BytesReader(encode_uvarint(len(over)) + over))


async def test_the_negotiation_fails_cleanly_on_a_huge_length_prefix(caplog: pytest.LogCaptureFixture) -> None:
    class Stream(BytesReader, ReadWriteCloser):
        async def write(self, data: bytes) -> None:
            pass

        async def close(self) -> None:
            pass

        def get_remote_address(self) -> tuple[str, int] | None:
            return None

    with caplog.at_level(logging.INFO, logger="triomcp.p2p"):
        assert hardening.apply() is True
        assert hardening.apply() is True  # idempotent
    assert hardening.is_applied()
    communicator = MultiselectCommunicator(Stream(encode_uvarint(2**30) + b"x" * 1000))
    with pytest.raises(MultiselectCommunicatorError) as info:  # what libp2p turns into a failed upgrade
        await communicator.read()
    assert isinstance(info.value.__cause__, MessageTooLarge)


def test_the_cap_applies_only_to_releases_without_the_fix() -> None:
    assert hardening.needed("0.8.1") and hardening.needed("0.8.0") and hardening.needed("0.7.0")
    assert not hardening.needed("0.8.2") and not hardening.needed("0.9.0") and not hardening.needed("1.0.0")
    assert hardening.needed("not a version")  # unknown: capped (harmless if the fix is there)
    assert hardening.needed() == hardening.needed(hardening.installed_version())
    assert hardening.installed_version() != "0.8.1" or hardening.needed()  # what pyproject.toml pins today


def test_the_communicator_is_the_only_user_of_read_delim() -> None:
    """The cap rebinds one name; if another loaded libp2p module used read_delim, it would miss it."""
    users = [name for name, module in list(sys.modules.items())
             if name.startswith("libp2p") and name not in ("libp2p.utils", "libp2p.utils.varint")
             and getattr(module, "read_delim", None) in (library_read_delim, hardening.bounded_read_delim)]
    assert users == ["libp2p.protocol_muxer.multiselect_communicator"]


async def test_a_node_applies_the_cap_and_logs_it_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.protocol_muxer import multiselect_communicator

    monkeypatch.setattr(multiselect_communicator, "read_delim", library_read_delim)  # as at import time
    with caplog.at_level(logging.INFO, logger="triomcp.p2p"):
        async with node_in(tmp_path / "a"), node_in(tmp_path / "b"):
            assert hardening.is_applied()
    applied = [r for r in caplog.records if hardening.ADVISORY in r.getMessage()]
    assert len(applied) == 1 and "capped at 65536 bytes" in applied[0].getMessage()


# -- the admission gate ----------------------------------------------------------------------
def test_sources_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert source_of(("127.0.0.2", 4001)) == "127.0.0.2"
    assert source_of(("2001:db8:1:2:aaaa::1", 1)) == source_of(("2001:db8:1:2:bbbb::9", 2)) == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:3::1", 1)) != source_of(("2001:db8:1:2::1", 1))
    assert source_of(("::ffff:10.0.0.7", 1)) == "10.0.0.7"
    assert source_of(("fe80::1%eth0", 1)) == "fe80::/64"
    assert source_of(None) == "unknown"


def test_the_gate_caps_per_source_and_overall_and_frees_slots_on_release() -> None:
    gate = InboundGate(max_total=5, max_per_source=2)
    assert [gate.try_admit("a") for _ in range(3)] == [True, True, False]  # per source
    assert [gate.try_admit(s) for s in ("b", "b", "c", "c")] == [True, True, True, False]  # overall: 5
    assert gate.statistics().unauthenticated == 5 and gate.statistics().refused == 2
    gate.release("a")
    assert gate.try_admit("c") and not gate.try_admit("d")  # the freed slot went to c; full again
    for source in ("a", "b", "b", "c", "c"):
        gate.release(source)
    assert gate.statistics().unauthenticated == 0 and gate._per_source == {}
    assert all(gate.try_admit("z") for _ in range(2))


async def test_a_node_gates_its_inbound_upgrade_and_closes_a_huge_prefix_at_once(tmp_path: Path) -> None:
    async with node_in(tmp_path / "a") as a, node_in(tmp_path / "b") as b:
        upgrade = b.host.get_network().upgrade_inbound_raw_conn
        assert getattr(upgrade, "triomcp_gate", None) is b.admission
        assert b.admission is not None
        b.admission.install(b.host.get_network())  # idempotent: not wrapped twice
        assert b.host.get_network().upgrade_inbound_raw_conn is upgrade
        port = int(ma.Multiaddr(b.listen_addrs()[0]).value_for_protocol("tcp"))
        with trio.fail_after(5):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(encode_uvarint(2**30) + b"x" * 65536)
                received = b""
                try:
                    while chunk := await stream.receive_some(65536):  # until the node closes it
                        received += chunk
                except trio.BrokenResourceError:  # closed with our bytes unread: a reset
                    pass
            assert received in (b"", b"\x13/multistream/1.0.0\n")  # at most its own header
            await trio.testing.wait_all_tasks_blocked(0.05)  # the node has finished with it
            assert b.statistics().inbound_unauthenticated == 0
            await a.connect(b.listen_addrs()[0])
            assert await a.ping(b.peer_id) > 0
        assert b.admission.statistics().failed == 1 and b.statistics().inbound_refused == 0


# -- muxers ----------------------------------------------------------------------------------
async def test_only_yamux_is_offered_or_accepted(tmp_path: Path) -> None:
    async with node_in(tmp_path / "b") as b:
        swarm = b.host.get_network()
        assert list(swarm.upgrader.muxer_multistream.transports) == [YAMUX_PROTOCOL]  # type: ignore[attr-defined]
        target = info_from_p2p_addr(ma.Multiaddr(b.listen_addrs()[0]))
        for muxers, accepted in (({MPLEX_PROTOCOL_ID: Mplex}, False),
                                 ({MPLEX_PROTOCOL_ID: Mplex, TProtocol(YAMUX_PROTOCOL): Yamux}, True)):
            key = create_new_key_pair()
            dialer = new_host(key_pair=key, muxer_opt=muxers,  # type: ignore[arg-type]
                              sec_opt={NOISE_PROTOCOL: NoiseTransport(key, noise_privkey=x25519_key_pair().private_key)})
            async with dialer.run([ma.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                try:
                    with trio.fail_after(15):
                        if accepted:  # mplex preferred, yamux offered too: yamux it is
                            await dialer.connect(target)
                            (conn,) = dialer.get_network().get_connections(ID.from_base58(b.peer_id))
                            assert isinstance(conn.muxed_conn, Yamux)
                        else:  # mplex only: no common muxer, no connection
                            with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                                await dialer.connect(target)
                            assert dialer.get_connected_peers() == []
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(3):
                        await dialer.close()
