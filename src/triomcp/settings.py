"""One typed settings object for the whole node.

Sources, highest priority first: keyword arguments, ``TRIOMCP_*`` environment
variables (nested keys use ``__``: ``TRIOMCP_P2P__LISTEN``), the TOML file named
by ``TRIOMCP_CONFIG``, then the defaults below. Unknown keys and bad values are
refused with a message naming the key (unlike Hypercorn's own TOML loader,
which silently accepts typos).

Size: over 300 lines because it is the whole schema, one documented field after another; each
section is a few lines of code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from triomcp.errors import ConfigError

__all__ = ["AuthSettings", "HttpSettings", "McpSettings", "P2PSettings", "RelaySettings", "Settings", "TaskQueueSettings", "load_settings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class HttpSettings(_Section):
    """The HTTP face of the node."""

    bind: list[str] = Field(default_factory=lambda: ["127.0.0.1:8080"])
    """Hypercorn binds: ``HOST:PORT``, ``unix:/path`` or ``fd://3`` (socket activation)."""
    graceful_timeout: float = 10.0
    """Seconds in-flight requests get to finish after SIGTERM/SIGINT."""
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    """Host header allow-list (DNS-rebinding defence). Ports are ignored. ``*`` allows any."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins allowed besides loopback ones (``http://localhost:*`` etc. are always allowed)."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """Request bodies above this get 413."""
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    """Requests per second per client address on ``/mcp`` (sustained); over it: 429 with
    ``Retry-After``. Off by default (the default bind is loopback); set it when exposed."""
    rate_limit_burst: int = Field(default=200, gt=0)
    """Requests a client address may send in a burst above the sustained rate."""
    max_calls_in_flight: int = Field(default=256, gt=0)
    """MCP calls (``tools/call``, ``resources/read``, ...) running at once; past it a call waits up to
    ``admission_wait``, then gets 503 with ``Retry-After`` and JSON-RPC error -32010. Health,
    metrics, streams and a task's outcome tools (``taskqueue_renew``, ``_complete``, ...) are never
    counted or refused."""
    max_calls_in_flight_per_principal: int = Field(default=64, gt=0)
    """A principal's guaranteed share: the last this many free slots are kept for principals
    holding fewer; one holding more is refused at once when only those are left. A principal is
    the authenticated one, or with authorization off the client's address (an IPv6 client's /64;
    all clients of a unix socket or of a proxy share one: raise it to ``max_calls_in_flight`` there)."""
    admission_wait: float = Field(default=0.05, ge=0)
    """Seconds a call may wait for a free slot before it is refused (0: refuse at once)."""
    max_requests_in_progress: int = Field(default=32, ge=0)
    """HTTP requests being read, parsed and computed at once, before their response begins (with
    ``triomcp serve``); past it a request waits up to ``request_wait``, then gets a fixed 503 with
    ``Retry-After`` and JSON-RPC error -32010 before Hypercorn parses it, and its connection is
    closed. A request without an answer after ``request_park_after`` stops counting. Health,
    readiness, metrics and a task's outcome tools are never refused. 0 turns it off."""
    request_wait: float = Field(default=0.025, ge=0)
    """Seconds a request may wait for a ``max_requests_in_progress`` slot before it is refused."""
    max_requests_in_progress_per_address: int = Field(default=8, gt=0)
    """A client address's guaranteed share of ``max_requests_in_progress``: the last this many free
    slots are kept for addresses holding fewer (all clients behind one proxy share one address)."""
    refusal_pause: float = Field(default=1.0, ge=0)
    """Seconds a connection whose request was refused by ``max_requests_in_progress`` is not read
    again (the refusal's ``Retry-After``): a client that retries at once waits that long instead of
    taking the server from the calls it serves. 0: read it again at once."""
    request_park_after: float = Field(default=0.25, gt=0)
    """Seconds after which a request still without an answer (a slow tool, a trickling client)
    frees its ``max_requests_in_progress`` slot: it is waiting, not using the server."""
    backlog: int = Field(default=1024, gt=0)
    """Listen backlog: connections the kernel queues before they are accepted (used when no
    Hypercorn TOML is given; capped by ``net.core.somaxconn``)."""
    keep_alive_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open (used when no Hypercorn TOML is given)."""
    access_log: bool = False
    """Write an access log to standard output (used when no Hypercorn TOML is given)."""


class McpSettings(_Section):
    """The MCP engine."""

    session_idle_timeout: float = Field(default=1800.0, gt=0)
    """Legacy sessions idle this long (seconds) expire; later requests get 404."""
    max_sessions: int = Field(default=10_000, gt=0)
    """More concurrent legacy sessions than this get 503."""
    replay_buffer_events: int = Field(default=256, gt=0)
    """SSE events kept per stream for Last-Event-ID replay."""
    page_size: int = Field(default=100, gt=0)
    """Items per page of list results."""
    request_state_key: SecretStr | None = None
    """HMAC key for modern input-required ``requestState``; random per process when unset."""
    plugins_enabled: list[str] | None = None
    """Entry points of group ``triomcp.plugins`` to load; ``None`` loads all installed."""
    plugins_disabled: list[str] = Field(default_factory=list)
    """Entry point names never to load."""
    conformance_fixtures: bool = False
    """Also serve the fixtures of the official MCP conformance suite (``test_*`` tools, ``test://``
    resources and prompts; ``make conformance``). For testing only: never on a production node."""


class RelaySettings(_Section):
    """Circuit relay v2: relaying for authorized peers, and slots on relays for a node behind NAT."""

    service: bool = False
    """Serve circuit relay v2 (HOP) on this node: peers listed in ``authorized_peers`` may reserve a
    slot here and reach each other through it. Others are refused. Run it on a publicly reachable node."""
    use: list[str] = Field(default_factory=list)
    """Relays to reserve a slot on (multiaddrs ending in ``/p2p/<relay id>``), kept connected and
    reserved; this node then tells its peers ``<relay>/p2p-circuit/p2p/<this node>`` as one of its
    addresses, and accepts relayed connections through these relays only."""
    use_bootstrap: bool = False
    """Also reserve a slot on every ``p2p.bootstrap`` peer that serves circuit relay."""
    max_reservations: int = Field(default=128, gt=0)
    """``service``: reservations held at once; more are refused (RESOURCE_LIMIT_EXCEEDED)."""
    reservation_ttl: int = Field(default=3600, ge=2, le=86_400)
    """``service``: seconds a reservation lasts; its holder refreshes it before it expires (at 3/4)."""
    max_circuits_per_peer: int = Field(default=16, gt=0)
    """``service``: relayed connections open at once to one peer holding a reservation."""
    max_reservations_per_source: int = Field(default=16, gt=0)
    """``service``: reservations held at once by peers that reserved from one IPv4 address or IPv6
    /64; more are refused (RESOURCE_LIMIT_EXCEEDED), so one source cannot take every slot. Machines
    behind one NAT share a source: raise it for a network with more nodes than this behind one address."""
    max_circuits_per_source: int = Field(default=64, gt=0)
    """``service``: relayed connections (HOP streams) open at once from one IPv4 address or IPv6 /64;
    more are refused (RESOURCE_LIMIT_EXCEEDED)."""
    circuit_duration: int = Field(default=3600, gt=0)
    """``service``: seconds a relayed connection may last; then it is reset (the peers dial again on demand)."""
    circuit_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    """``service``: bytes (both directions) a relayed connection may carry; then it is reset."""
    hole_punch: bool = True
    """When a relayed connection to an authorized peer opens, try py-libp2p's DCUtR (hole punching
    through both NATs, TCP simultaneous open) to replace it with a direct one; the relayed
    connection stays the path if that fails."""

    @field_validator("use")
    @classmethod
    def _relay_addrs(cls, v: list[str]) -> list[str]:
        for addr in v:
            if "/p2p-circuit" in addr or not addr.rpartition("/p2p/")[2] or "/" in addr.rpartition("/p2p/")[2]:
                raise ValueError(f"{addr!r}: a relay's own multiaddr, ending in /p2p/<relay id> "
                                 "(not a /p2p-circuit address)")
        return v


class ReachabilitySettings(_Section):
    """Is this node publicly reachable? Its authorized peers dial it back (``p2p/reachability.py``)."""

    check: bool = True
    """Ask connected authorized peers to dial this node back (at its observed IP, on its listen
    ports): ``public`` if one reaches it, ``private`` if they answered and none did, ``unknown``
    until one answers. With relays configured, a ``public`` node does not announce its relayed
    address. The answering side (for authorized peers only, rate limited) is always on."""
    interval: float = Field(default=300.0, ge=1.0)
    """Seconds between checks once one was answered (while none was, each new peer is asked)."""
    dialback_timeout: float = Field(default=3.0, gt=0, le=30.0)
    """Seconds one dial-back (TCP connect and multistream-select header) may take."""


class P2PSettings(_Section):
    """The libp2p node."""

    enabled: bool = True
    """Run the libp2p node in the server's nursery."""
    mode: Literal["embedded", "local-node"] = "embedded"
    """Where the node runs: ``embedded`` in this server's nursery, or ``local-node``: a separate
    ``triomcp node`` on this machine owns the node, the queue and the workers, and this server
    forwards every tool call and resource read to it over libp2p on loopback."""
    local_node: str | None = None
    """``local-node`` mode: the node's multiaddr (…/p2p/<peer id>); default: the node announced in
    ``data_dir`` (share the data dir with the ``triomcp node`` unit)."""
    listen: list[str] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    """Multiaddrs to listen on (TCP). Loopback by default; e.g. ``/ip4/0.0.0.0/tcp/4001`` for a mesh."""
    bootstrap: list[str] = Field(default_factory=list)
    """Multiaddrs (ending in ``/p2p/<peer id>``) kept connected with backoff."""
    peer_exchange: bool = True
    """Ask connected authorized peers for their authorized peers and dial those this node
    authorizes too: from one bootstrap address, the mesh fills in. Beyond the first exchange: an
    answer also tells of up to 16 listed peers the answerer is not connected to (at the addresses
    each announced itself, passed on at most 3 exchanges; at most 256 entries of an answer are
    read, and at most 2 of these peers dialed while this node wants peers); about every 30 s a node
    with at least ``connections_low`` listed peers connected visits one remembered peer it is not
    connected to, asks it, and closes that connection again with a goodbye (``TRIMMING``) unless
    it now wants more peers or has a request in flight to it (each visit that teaches it no new
    peer doubles that interval, up to 10 minutes); and a node left with no listed peer
    connected after its peers trimmed it dials its remembered peers again, as at start (those that
    trimmed it are left alone for 60 s)."""
    mesh_name: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    """The mesh this node belongs to (letters, digits, ``.``, ``_``, ``-``; empty: the unnamed mesh).
    Peer exchange runs only between nodes of the same name: nodes of different meshes that share
    a relay or a bootstrap node never learn of each other's peers. Any one bootstrap address of a
    mesh is enough to find the rest of it."""
    mdns: bool = False
    """Discover peers on the local network by mDNS (starts zeroconf threads; off by default) and dial
    the ones listed in ``authorized_peers``. Needs ``listen`` on an interface address (not 0.0.0.0)."""
    dial_timeout: float = Field(default=5.0, gt=0)
    """Seconds a dial may take (a silent peer would otherwise hang for minutes)."""
    stream_timeout: float = Field(default=5.0, gt=0)
    """Seconds opening a stream to a peer may take."""
    call_timeout: float = Field(default=30.0, gt=0)
    """Default seconds for a tool call on a peer (``p2p_call_tool``) and for a ping."""
    max_frame_bytes: int = Field(default=1024 * 1024, gt=0)
    """Largest MCP-over-libp2p frame accepted; bigger ones get a JSON-RPC error and are skipped."""
    peer_requests_per_second: float = Field(default=2000.0, gt=0)
    """Each peer's sustained request rate; requests over it are answered -32010 at once."""
    peer_request_burst: int = Field(default=2000, gt=0)
    """Requests a peer may send in a burst above the sustained rate."""
    handshake_timeout: float = Field(default=5.0, gt=0)
    """Seconds an inbound connection has from accept to being authenticated (multistream-select,
    Noise, muxer); one deadline for the whole phase, so a peer that sends nothing or trickles bytes
    is closed when it passes."""
    max_unauthenticated_inbound: int = Field(default=256, gt=0)
    """Inbound connections not yet authenticated, overall; more are closed at once, unread."""
    max_unauthenticated_per_source: int = Field(default=16, gt=0)
    """Inbound connections not yet authenticated from one IPv4 address or IPv6 /64; more are closed
    at once, unread."""
    connections_low: int = Field(default=8, ge=1)
    """Peers this node keeps connected: peer exchange dials the peers it learns of only while fewer
    listed peers than this are connected (the others' addresses are remembered), and trimming closes
    connections down to this many. A node with at least this many still visits one remembered peer
    about every 30 s, over a connection it closes again (``peer_exchange``), so parts of a mesh
    that settled apart learn of each other. The work of the whole mesh still reaches a node
    through gossip, and a node dials the owner of a task on demand."""
    connections_high: int = Field(default=16, ge=1)
    """Connected peers above which the oldest-unused connections are closed, down to
    ``connections_low`` (not this node's bootstrap peers, peers in use or with requests in flight,
    nor connections younger than 10 s, which do not count toward this bound until they are 10 s
    old: a peer that connects for a moment does not make a node trim). At least ``connections_low``."""

    relay: RelaySettings = Field(default_factory=RelaySettings)
    reachability: ReachabilitySettings = Field(default_factory=ReachabilitySettings)
    """Whether this node is publicly reachable: its trusted peers dial it back."""

    @field_validator("connections_high")
    @classmethod
    def _high_not_below_low(cls, v: int, info: Any) -> int:
        low = info.data.get("connections_low")
        if isinstance(low, int) and v < low:
            raise ValueError(f"must be at least connections_low ({low})")
        return v


class TaskQueueSettings(_Section):
    """The durable task queue."""

    enabled: bool = True
    """Open the durable queue (``<data_dir>/queue.db``) and run workers."""
    lease_seconds: float = Field(default=30.0, gt=0)
    """How long a claim holds a task; workers renew at a third of it while the handler runs."""
    synchronous: Literal["full", "normal"] = "full"
    """SQLite durability: ``full`` survives power loss, ``normal`` only a process crash (faster)."""
    max_attempts: int = Field(default=3, ge=0)
    """Attempts per task before it is dead-lettered (0 = unlimited); a submit may override it."""
    retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Finished tasks older than this are deleted."""
    concurrency: dict[str, int] = Field(default_factory=lambda: {"*": 4})
    """Concurrent handlers per task type; ``*`` is the default for types not listed."""
    mesh: bool = True
    """Take part in the mesh: announce this queue's surplus (tasks beyond what the idle local workers
    take) to the peers, and run the tasks other listed peers announce."""
    mesh_concurrency: dict[str, int] = Field(default_factory=lambda: {"*": 4})
    """Slots per task type (``*``: the default) for tasks of other owners, across all of them. An idle
    slot costs nothing on the network: it waits for an announcement, it does not poll."""
    handlers: dict[str, str] = Field(default_factory=dict)
    """Extra task handlers: task type -> ``module:function``."""


DEFAULT_SCOPES: dict[str, list[str]] = {
    "triomcp:status": ["status", "default"],
    "triomcp:tasks": ["tasks"],
    "triomcp:worker": ["worker"],
    "triomcp:p2p": ["p2p"],
    "triomcp:cache": ["cache"],
    "triomcp:metrics": ["metrics"],
    "triomcp:admin": ["*"],
}


class AuthSettings(_Section):
    """HTTP authorization. Off unless ``tokens_file`` or ``oauth_issuer`` is set.

    With it on, every ``/mcp`` and ``/metrics`` request needs ``Authorization: Bearer <token>``;
    a tool call also needs a scope that maps to the tool's group (see ``scopes``).
    """

    tokens_file: Path | None = None
    """Static bearer tokens: one ``<principal> <scope>[,<scope>...] sha256:<hex>`` per line
    (``triomcp tokens new`` writes them). Relative paths are under ``data_dir``. Re-read when it changes."""
    oauth_issuer: str | None = None
    """OAuth 2.1 resource-server mode: the ``iss`` every JWT access token must carry."""
    oauth_jwks_url: str | None = None
    """Where the issuer publishes its signing keys (JWKS); fetched and cached."""
    oauth_jwks_file: Path | None = None
    """A local JWKS file instead of ``oauth_jwks_url`` (air-gapped deployments, tests)."""
    resource_url: str | None = None
    """This server's MCP URL (``https://host/mcp``): the audience tokens must name, and the
    ``resource`` of the protected-resource metadata. Required with ``oauth_issuer``."""
    authorization_servers: list[str] = Field(default_factory=list)
    """Advertised in the protected-resource metadata; defaults to ``[oauth_issuer]``."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    """JWT signature algorithms accepted (never ``none``, never HMAC with a public key)."""
    leeway_seconds: float = Field(default=30.0, ge=0)
    """Clock skew allowed on ``exp``/``nbf``."""
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    """How long fetched signing keys are kept (an unknown ``kid`` refetches at once)."""
    scopes: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_SCOPES))
    """Scope -> tool groups it opens (``*``: all). Groups: status, tasks, worker, p2p, cache, metrics."""

    @field_validator("algorithms")
    @classmethod
    def _no_weak_algorithms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed for access tokens (use RS*, PS*, ES* or EdDSA)")
        return v

    @property
    def enabled(self) -> bool:
        return self.tokens_file is not None or self.oauth_issuer is not None

    def model_post_init(self, context: Any) -> None:
        if self.oauth_issuer is not None:
            if not self.oauth_jwks_url and self.oauth_jwks_file is None:
                raise ValueError("auth.oauth_issuer needs auth.oauth_jwks_url or auth.oauth_jwks_file")
            if not self.resource_url:
                raise ValueError("auth.oauth_issuer needs auth.resource_url (the audience tokens must carry)")


class Settings(BaseSettings):
    """Everything a node needs to run. See docs/configuration.md for each key."""

    model_config = SettingsConfigDict(
        env_prefix="TRIOMCP_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    data_dir: Path = Path("./triomcp-data")
    """Identity, authorized peers, known peers, announce file, queue database. systemd: ``StateDirectory=``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level; libp2p's own chatter is kept to warnings unless DEBUG."""
    log_format: Literal["text", "json"] = "text"
    """``text`` lines, or ``json`` lines for log shippers."""
    http: HttpSettings = Field(default_factory=HttpSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    p2p: P2PSettings = Field(default_factory=P2PSettings)
    taskqueue: TaskQueueSettings = Field(default_factory=TaskQueueSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("TRIOMCP_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError."""
    path = os.environ.get("TRIOMCP_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"TRIOMCP_CONFIG names {path!r}, which is not a file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
