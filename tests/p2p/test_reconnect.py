"""The one reconnect loop (``triomcp.p2p.discovery.keep_connected``), over a fake network and
``autojump_clock``: dial until connected with backoff, redial on a connection event, transient
errors only. Its two users: bootstrap peers, and the local node in ``p2p.mode = "local-node"``."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from triomcp._retry import Backoff
from triomcp.errors import ConfigError, DialFailed
from triomcp.p2p.discovery import keep_bootstrap_connected, keep_connected, peer_id_in

PEER = "12D3KooWBootstrap"
ADDR = f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"


class FakeNet:
    """Who is connected, the dials made (at what virtual time), and connection events."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.connected: set[str] = set()
        self.dials: list[float] = []
        self.dialed = trio.Event()
        self._changed = trio.Event()

    async def connect(self, multiaddr: str) -> str:
        self.dials.append(trio.current_time())
        self.dialed.set()
        self.dialed = trio.Event()
        if self.failures:
            self.failures -= 1
            raise DialFailed(f"dialing {multiaddr}: refused")
        self.connected.add(peer_id_in(multiaddr))
        self.changed()
        return peer_id_in(multiaddr)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def drop(self, peer_id: str) -> None:
        self.connected.discard(peer_id)
        self.changed()


async def target() -> str:
    return ADDR


async def test_dials_with_backoff_until_connected_then_redials_on_a_drop(
        autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNet(failures=3)
    rng = random.Random(7)
    expected = [rng.uniform(0, min(60.0, 1.0 * 2 ** (n - 1))) for n in (1, 2, 3)]  # full jitter, 1, 2, 4 s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_connected(target, net.connect, net.is_connected, net.wait_changed,
                                                  what="bootstrap peer", backoff=Backoff(1.0, 60.0, random.Random(7))))
        while not net.connected:
            await net.dialed.wait()
        pauses = [b - a for a, b in zip(net.dials, net.dials[1:], strict=False)]
        assert pauses == pytest.approx(expected)
        await trio.testing.wait_all_tasks_blocked()
        assert len(net.dials) == 4  # connected: no polling, no more dials
        before = trio.current_time()
        net.drop(PEER)  # the connection drops: redialed at once, by the event
        await net.dialed.wait()
        assert net.dials[-1] == before and PEER in net.connected
        nursery.cancel_scope.cancel()


async def test_a_known_peer_already_connected_is_not_dialed(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNet()
    net.connected.add(PEER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_bootstrap_connected, ADDR, net.connect, net.is_connected, net.wait_changed)
        await trio.testing.wait_all_tasks_blocked()
        assert net.dials == []
        net.drop(PEER)
        await net.dialed.wait()
        assert len(net.dials) == 1
        nursery.cancel_scope.cancel()


async def test_only_transient_errors_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    async def unannounced() -> str:
        raise ConfigError("no node announced yet")

    net = FakeNet()
    with pytest.raises(ConfigError):  # not transient for a bootstrap peer: the loop ends
        await keep_connected(unannounced, net.connect, net.is_connected, net.wait_changed, what="bootstrap peer")
    calls = 0

    async def announced_later() -> str:  # transient for the local node: it may not have started yet
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConfigError("no node announced yet")
        return ADDR

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_connected(announced_later, net.connect, net.is_connected, net.wait_changed,
                                                  what="the local node", transient=(DialFailed, ConfigError),
                                                  backoff=Backoff(0.4, 5.0)))
        await net.dialed.wait()
        assert calls == 3 and PEER in net.connected
        nursery.cancel_scope.cancel()


async def test_a_peer_that_said_it_is_leaving_is_redialed_after_the_pause(
        autojump_clock: trio.testing.MockClock) -> None:
    """``pause`` (the node's ``redial_pause``): a bootstrap peer that said goodbye is first redialed
    after the pause it gives, once; later drops are redialed at once again."""
    net = FakeNet()
    net.connected.add(PEER)
    pauses: list[str] = []

    def pause(peer_id: str) -> tuple[float, str] | None:
        if pauses:
            return None
        pauses.append(peer_id)
        return 5.0, "said it is leaving"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_bootstrap_connected(ADDR, net.connect, net.is_connected, net.wait_changed,
                                                            pause=pause))
        await trio.testing.wait_all_tasks_blocked()
        left = trio.current_time()
        net.drop(PEER)
        await net.dialed.wait()
        assert pauses == [PEER] and net.dials == [left + 5.0]
        before = trio.current_time()
        net.drop(PEER)  # no goodbye this time: redialed at once
        await net.dialed.wait()
        assert net.dials[-1] == before
        nursery.cancel_scope.cancel()


async def test_a_node_with_enough_peers_does_not_come_back_to_its_bootstrap_peer(
        autojump_clock: trio.testing.MockClock) -> None:
    """``needed`` (the node's ``wants_peers``): a bootstrap peer that dropped the node (trimmed it)
    is redialed only once the node has too few peers again."""
    net = FakeNet()
    net.connected.add(PEER)
    enough = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_bootstrap_connected(ADDR, net.connect, net.is_connected, net.wait_changed,
                                                            needed=lambda: not enough))
        await trio.testing.wait_all_tasks_blocked()
        net.drop(PEER)
        await trio.sleep(120)
        assert net.dials == []  # the node has its peers: no dial, however long
        enough = False
        fewer = trio.current_time()
        net.changed()  # another peer went: now the node wants peers
        await net.dialed.wait()
        assert net.dials == [fewer]
        nursery.cancel_scope.cancel()
