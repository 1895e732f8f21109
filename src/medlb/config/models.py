"""Pydantic models of the YAML config file.

Every model forbids unknown keys, so a typo (`helth:`) is an error rather than a
silently ignored setting. Every field has a default except the ones a service cannot
exist without (name, listen, servers). `docs/configuration.md` documents each key; keep
the two in step.

A few settings are in the schema before medlb runs them (TLS in mode `mllp`), so that
a site can write its whole config today: `medlb check` says which parts are not yet
available (config/loader.py's warnings) and `medlb run` refuses to start them rather
than ignore them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from medlb.config.units import HostPort, parse_duration, parse_listen, parse_server_address, parse_size

def _check_ae_title(value: str) -> str:
    """DICOM PS3.5: at most 16 characters of the default repertoire, no backslash, not blank."""
    if not 1 <= len(value) <= 16 or not value.strip():
        raise ValueError("an AE title has 1 to 16 characters and is not blank")
    if any(ord(c) < 0x20 or ord(c) > 0x7E or c == "\\" for c in value):
        raise ValueError("an AE title holds printable ASCII characters only, no backslash")
    return value


def _check_ae_pattern(value: str) -> str:
    """A glob over AE titles (`CT*`, `WS?`, `[CM]R1`): printable ASCII, no backslash."""
    if not 1 <= len(value) <= 64 or not value.strip():
        raise ValueError("an AE title pattern has 1 to 64 characters and is not blank")
    if any(ord(c) < 0x20 or ord(c) > 0x7E or c == "\\" for c in value):
        raise ValueError("an AE title pattern holds printable ASCII characters only, no backslash")
    return value.strip()


Duration = Annotated[float, BeforeValidator(parse_duration)]
#: A duration that must be positive: a zero interval or timeout would spin or never wait.
Positive = Annotated[float, BeforeValidator(parse_duration), Field(ge=0.01)]
Size = Annotated[int, BeforeValidator(parse_size)]
ServerAddress = Annotated[HostPort, BeforeValidator(parse_server_address)]
ListenItem = Annotated[tuple[HostPort, ...], BeforeValidator(parse_listen)]
#: Service, server, pool, token and user names: they appear in URLs, metrics and logs.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
AETitle = Annotated[str, AfterValidator(_check_ae_title)]
AEPattern = Annotated[str, AfterValidator(_check_ae_pattern)]

Mode = Literal["tcp", "dicom", "mllp", "http", "l4-nat", "l4-dr"]
Scheduler = Literal["roundrobin", "leastconn", "source", "maglev"]

#: Modes and health check types this release can run; the rest validate but do not start.
AVAILABLE_MODES: frozenset[str] = frozenset({"tcp", "mllp", "dicom", "http", "l4-nat", "l4-dr"})
#: The kernel layer 4 modes: nftables forwards, medlb only steers (medlb.kernel).
L4_MODES: frozenset[str] = frozenset({"l4-nat", "l4-dr"})
#: The schedulers the kernel can run: Maglev over the flow, or over the client address.
L4_SCHEDULERS: frozenset[str] = frozenset({"maglev", "source"})
AVAILABLE_CHECKS: frozenset[str] = frozenset({"tcp", "http", "https", "script", "none", "mllp", "dicom-echo",
                                              "dicom-find", "fhir", "dicomweb", "xds"})
#: Modes whose routes use named pools.
POOL_MODES: frozenset[str] = frozenset({"dicom", "http"})
AVAILABLE_SCHEDULERS: frozenset[str] = frozenset({"roundrobin", "leastconn", "source", "maglev"})
AVAILABLE_PERSISTENCE: frozenset[str] = frozenset({"none", "source-ip", "cookie"})
#: Modes that terminate TLS (`tls:`) and re-encrypt to servers (`backend_tls:`).
TLS_MODES: frozenset[str] = frozenset({"tcp", "http", "dicom"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _shorthand_type(value: Any) -> Any:
    """Let `persistence: source-ip` stand for `persistence: {type: source-ip}`."""
    return {"type": value} if isinstance(value, str) else value


# --- servers and pools ---------------------------------------------------------------


class ServerConfig(Strict):
    name: Name
    address: ServerAddress
    weight: int = Field(1, ge=0, le=1000)
    ae_title: AETitle | None = None


class PoolConfig(Strict):
    servers: list[ServerConfig] = Field(min_length=1)
    backup: list[ServerConfig] = []


# --- health checks -------------------------------------------------------------------


#: A check's timeout when the file gives none, unless the interval is shorter.
DEFAULT_CHECK_TIMEOUT = 2.0


class CheckBase(Strict):
    interval: Positive = 5.0
    timeout: Positive = DEFAULT_CHECK_TIMEOUT
    rise: int = Field(2, ge=1, le=100)
    fall: int = Field(3, ge=1, le=100)
    port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> "CheckBase":
        """A default the user did not write must never be the error: `interval: 1s`
        alone means checks time out after 1 s, not a refusal of a 2 s default."""
        if "timeout" not in self.model_fields_set:
            self.timeout = min(DEFAULT_CHECK_TIMEOUT, self.interval)
        return self


class TcpCheck(CheckBase):
    type: Literal["tcp"]


class HttpCheck(CheckBase):
    type: Literal["http", "https"]
    method: Literal["GET", "HEAD", "OPTIONS", "POST"] = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = [200]
    expect_body: str | None = None
    verify: bool = True
    ca: str | None = None
    max_body: Size = 65536

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the path must start with '/'")
        return value


class ScriptCheck(CheckBase):
    type: Literal["script"]
    command: list[str] = Field(min_length=1)

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        import shlex

        return shlex.split(value) if isinstance(value, str) else value


class NoCheck(CheckBase):
    type: Literal["none"]


class DicomEchoCheck(CheckBase):
    type: Literal["dicom-echo"]
    #: None: the service's dicom.ae_title (MEDLB by default).
    calling_ae: AETitle | None = None
    #: None: the server's ae_title, else the service's dicom.ae_title (what clients call).
    called_ae: AETitle | None = None


def _check_query(value: dict[str, str]) -> dict[str, str]:
    """Keys are DICOM keywords (PatientID, StudyDate), checked against pydicom's dictionary
    so a typo is a config error rather than a check that matches everything."""
    from pydicom.datadict import tag_for_keyword

    for keyword in value:
        if keyword == "QueryRetrieveLevel":
            raise ValueError("the check queries at STUDY level; leave QueryRetrieveLevel out")
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword (for example PatientID, StudyInstanceUID)")
    return value


class DicomFindCheck(CheckBase):
    type: Literal["dicom-find"]
    calling_ae: AETitle | None = None
    called_ae: AETitle | None = None
    #: The query keys of a Study Root C-FIND at STUDY level; narrow, so it costs the
    #: archive an index lookup and matches nothing real.
    query: Annotated[dict[str, str], AfterValidator(_check_query)] = {"PatientID": "MEDLB-HEALTHCHECK"}


class MllpCheck(CheckBase):
    type: Literal["mllp"]
    message: str | None = None
    expect: Literal["AA", "any"] = "AA"


class FhirCheck(CheckBase):
    type: Literal["fhir"]
    path: str = "/metadata"


class DicomwebCheck(CheckBase):
    type: Literal["dicomweb"]
    path: str = "/studies?limit=1"


class XdsCheck(CheckBase):
    type: Literal["xds"]
    path: str = "/"
    soap_request: str | None = None
    wsdl: bool = False


HealthConfig = Annotated[
    Union[TcpCheck, HttpCheck, ScriptCheck, NoCheck, DicomEchoCheck, DicomFindCheck,
          MllpCheck, FhirCheck, DicomwebCheck, XdsCheck],
    Field(discriminator="type"),
    BeforeValidator(_shorthand_type),
]


# --- persistence ---------------------------------------------------------------------


class NoPersistence(Strict):
    type: Literal["none"]


class SourceIpPersistence(Strict):
    type: Literal["source-ip"]
    timeout: Positive = 300.0
    max_entries: int = Field(65536, ge=1, le=10_000_000)
    #: Prefix length that groups client addresses (32 = each IPv4 address alone).
    ipv4_prefix: int = Field(32, ge=0, le=32)
    ipv6_prefix: int = Field(128, ge=0, le=128)


class CookiePersistence(Strict):
    type: Literal["cookie"]
    #: An RFC 6265 cookie name (a token): it goes into Set-Cookie as written.
    name: str = Field("MEDLBSRV", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
    max_age: Duration | None = None


PersistenceConfig = Annotated[
    Union[NoPersistence, SourceIpPersistence, CookiePersistence],
    Field(discriminator="type"),
    BeforeValidator(_shorthand_type),
]


# --- TLS (modes tcp, http and dicom; mllp refuses it for now) -------------------------


class CertificateConfig(Strict):
    cert: str
    key: str
    server_names: list[str] = []


class TlsConfig(Strict):
    cert: str | None = None
    key: str | None = None
    certificates: list[CertificateConfig] = []
    policy: Literal["modern", "intermediate"] = "intermediate"
    client_ca: str | None = None
    verify_client: Literal["none", "optional", "required"] = "none"


class BackendTlsConfig(Strict):
    verify: bool = True
    ca: str | None = None
    server_name: str | None = None
    cert: str | None = None
    key: str | None = None


# --- mode-specific sections ----------------------------------------------------------


class DicomRoute(Strict):
    """Both fields are globs over AE titles; a field left out matches any title."""

    called_ae: AEPattern | None = None
    calling_ae: AEPattern | None = None
    pool: Name


class DicomConfig(Strict):
    #: The balancer's own AE title: what clients call, and medlb's calling AE in checks.
    ae_title: AETitle = "MEDLB"
    #: Globs; None lets every calling AE in. Others get A-ASSOCIATE-RJ 1,1,3.
    allowed_calling_aes: list[AEPattern] | None = None
    routes: list[DicomRoute] = []
    #: An association no route matches: `default` sends it to the default pool,
    #: `reject` answers A-ASSOCIATE-RJ 1,1,7 (called AE title not recognised).
    unrouted: Literal["default", "reject"] = "default"


class MllpConfig(Strict):
    balance: Literal["message", "connection"] = "message"
    ordering_key: str = "PID-3"
    ack_timeout: Positive = 30.0
    retries: int = Field(2, ge=0, le=10)
    max_message_size: Size = Field(16 * 1024 * 1024, ge=1024)
    #: Persistent connections medlb keeps to each server (one message in flight on each).
    server_connections: int = Field(4, ge=1, le=256)
    #: Messages medlb may write on one server connection before the first one's ACK
    #: (1: one at a time, as MLLP senders do). Only for engines that answer pipelined
    #: messages; ready messages to one connection then go out in one write.
    pipeline: int = Field(1, ge=1, le=64)
    #: Messages one sender may have waiting for their ACK before medlb stops reading it.
    max_queued: int = Field(256, ge=1, le=100_000)
    #: Bytes of one sender's messages medlb holds before it stops reading from it.
    max_queued_bytes: Size = Field(64 * 1024 * 1024, ge=1024)
    #: Bytes of unfinished messages (frames whose end has not arrived) all the senders of
    #: the service may make one medlb process hold; a frame past it is refused with AR.
    #: (Ordered by a message field, a service is served by one process.)
    partial_frames_budget: Size = Field(256 * 1024 * 1024, ge=1024)

    @field_validator("ordering_key")
    @classmethod
    def _field_path(cls, value: str) -> str:
        if value != "connection" and not re.fullmatch(r"[A-Z][A-Z0-9]{2}-[1-9]\d*(\.[1-9]\d*){0,2}", value):
            raise ValueError("expected a field path such as PID-3, PID-3.1, MSH-4 (HL7 counts fields, components and "
                             "subcomponents from 1), or 'connection'")
        return value


class HttpRoute(Strict):
    path_prefix: str
    pool: Name


class HttpConfig(Strict):
    #: A plain-HTTP request on a TLS listener gets a redirect to https:// (else a 400).
    redirect_http: bool = False
    routes: list[HttpRoute] = []
    #: A client has this long to send a whole request head, from accept or from the
    #: head's first byte on a kept-alive connection (else 408 and close).
    header_timeout: Positive = 10.0
    #: How long a kept-alive client connection may wait for its next request's first byte.
    keepalive_timeout: Positive = 60.0
    #: A request or response body that moves no byte for this long is abandoned.
    body_timeout: Positive = 60.0
    #: How long a server has to start its response once the request is sent (else 504).
    server_timeout: Positive = 60.0
    #: Largest request head in bytes, and most header lines (else 431).
    max_header_size: Size = Field(32 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(100, ge=1, le=10_000)
    #: Idle keep-alive connections medlb keeps to each server, and for how long.
    server_idle_connections: int = Field(64, ge=0, le=4096)
    server_idle_timeout: Positive = 30.0

    @field_validator("routes")
    @classmethod
    def _prefixes(cls, routes: list[HttpRoute]) -> list[HttpRoute]:
        for route in routes:
            if not route.path_prefix.startswith("/"):
                raise ValueError(f"path_prefix {route.path_prefix!r} must start with '/'")
        return routes


#: Interface names that are also nft identifiers (Linux allows 15 bytes); the same
#: pattern as kernel/ruleset.py's, which renders them (a unit test keeps the two equal).
INTERFACE_PATTERN = r"^[A-Za-z0-9_.-]{1,15}$"


class L4Config(Strict):
    """The kernel layer 4 modes' section (`l4-dr`, `l4-nat`): where the kernel forwards
    and what medlb leaves behind. See docs/l4.md."""

    #: DR: where client frames arrive and are sent out again to the servers. Both
    #: modes: where medlb adds the VIP (`manage_vip`).
    interface: str
    #: NAT only: masquerade to the balancer's address, so servers need no route back
    #: through the balancer (and see the balancer, not the client, as the peer).
    source_nat: bool = False
    #: Add each VIP to `interface` on start and remove it on stop. False in a clustered
    #: pair, where the VRRP instance owns the VIPs, or where the operator adds them.
    manage_vip: bool = True
    #: On SIGTERM: `remove` the kernel tables (stop means stop) or `keep` them
    #: forwarding for a restart or an upgrade, which adopts them.
    on_stop: Literal["remove", "keep"] = "remove"
    #: DR: how long a flow's pin outlives its last packet. Longer than an idle DICOM
    #: association or MLLP link stays open, or a quiet flow loses its pin and, after
    #: a change of the server table, would be sent to another server.
    pin_timeout: Annotated[float, BeforeValidator(parse_duration), Field(ge=1, le=30 * 86400)] = 7200.0

    @field_validator("interface")
    @classmethod
    def _interface_name(cls, value: str) -> str:
        if not re.fullmatch(INTERFACE_PATTERN, value):
            raise ValueError(f"{value!r} is not an interface name nftables accepts: 1 to 15 letters, digits, "
                             "'_', '.' or '-', as `ip link` shows it")
        return value


class Limits(Strict):
    """Per-service limits. Each has a default so no service runs unbounded."""

    max_connections: int = Field(10000, ge=1, le=1_000_000)
    connect_timeout: Positive = 3.0
    connect_retries: int = Field(2, ge=0, le=16)
    idle_timeout: Positive = 3600.0
    #: Bytes medlb holds for one direction of a connection before it stops reading.
    buffer_size: Size = Field(256 * 1024, ge=4096, le=64 * 1024 * 1024)
    associate_timeout: Positive = 30.0
    max_associate_size: Size = 256 * 1024


class ServiceConfig(Strict):
    name: Name
    mode: Mode = "tcp"
    listen: list[ListenItem] = Field(min_length=1)
    scheduler: Scheduler = "roundrobin"
    persistence: PersistenceConfig = NoPersistence(type="none")
    health: HealthConfig = TcpCheck(type="tcp")
    failback: Literal["auto", "manual"] = "auto"
    on_halt: Literal["keep", "close"] = "keep"
    servers: list[ServerConfig] = Field(min_length=1)
    backup: list[ServerConfig] = []
    pools: dict[Name, PoolConfig] = {}
    tls: TlsConfig | None = None
    backend_tls: BackendTlsConfig | None = None
    limits: Limits = Limits()
    dicom: DicomConfig | None = None
    mllp: MllpConfig | None = None
    http: HttpConfig | None = None
    l4: L4Config | None = None

    @field_validator("listen", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def addresses(self) -> list[HostPort]:
        """Every listen address, with port ranges expanded."""
        return [address for item in self.listen for address in item]

    @property
    def relayed_addresses(self) -> list[HostPort]:
        """The addresses medlb's own sockets listen on: none for a layer 4 service,
        whose VIPs the kernel forwards."""
        return [] if self.mode in L4_MODES else self.addresses

    @model_validator(mode="after")
    def _mode_defaults(self) -> "ServiceConfig":
        """A mode's own section defaults to its defaults, so `mode: mllp` alone works.
        The L4 modes' section has a key without a default (`interface`), so it must be
        written; their scheduler is `maglev` unless the file names one."""
        if self.mode == "mllp" and self.mllp is None:
            self.mllp = MllpConfig()
        if self.mode == "http" and self.http is None:
            self.http = HttpConfig()
        if self.mode in L4_MODES:
            if self.l4 is None:
                raise ValueError(f"mode {self.mode} needs an l4: section with at least interface "
                                 "(for example l4: {interface: eth0})")
            if "scheduler" not in self.model_fields_set:
                self.scheduler = "maglev"
        return self

    def all_pools(self) -> dict[str, PoolConfig]:
        """The default pool (servers/backup) and the named ones, as one mapping."""
        return {"default": PoolConfig(servers=self.servers, backup=self.backup), **self.pools}


class TokenConfig(Strict):
    name: Name
    token: str | None = Field(None, min_length=16)
    token_file: str | None = None
    role: Literal["viewer", "operator", "admin"] = "viewer"


def _one_address(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    addresses = parse_listen(value)
    if len(addresses) != 1:
        raise ValueError("the admin API listens on one address, not a range")
    return addresses[0]


class UserConfig(Strict):
    """A person who logs in to the web page; `medlb passwd` prints the hash."""

    name: Name
    password_hash: str = Field(pattern=r"^(scrypt\$|\$argon2)")
    role: Literal["viewer", "operator", "admin"] = "viewer"


class AdminTlsConfig(Strict):
    """The admin listener's own certificate and key (PEM files)."""

    cert: str
    key: str


class LockoutConfig(Strict):
    """After `attempts` failed logins within `window` for one user from one address, that
    user's logins from that address are refused for `duration`; after `source_attempts`
    from one address, whatever the name (a name that is no user counts only here),
    every login from it is."""

    attempts: int = Field(5, ge=1, le=1000)
    source_attempts: int = Field(20, ge=1, le=10000)
    window: Positive = 900.0
    duration: Positive = 900.0


class PasswordChecksConfig(Strict):
    """How many logins' passwords are checked at once. A check is scrypt: about 0.15 s of
    a core and 32 MiB, in the control process that also runs the health checks; a
    login beyond either bound is refused at once (429) without checking its password."""

    at_once: int = Field(2, ge=1, le=64)
    per_source: int = Field(1, ge=1, le=64)


class AdminConfig(Strict):
    listen: Annotated[HostPort, BeforeValidator(_one_address)] = HostPort("127.0.0.1", 9443)
    token: str | None = Field(None, min_length=16)
    token_file: str | None = None
    tokens: list[TokenConfig] = []
    users: list[UserConfig] = []
    #: `auto` (default): HTTPS with a self-signed certificate generated into state_dir;
    #: `off`: plain HTTP (only sensible on loopback); or {cert, key}: HTTPS with these files.
    tls: Literal["auto", "off"] | AdminTlsConfig = "auto"
    session_timeout: Positive = 900.0
    lockout: LockoutConfig = LockoutConfig()
    password_checks: PasswordChecksConfig = PasswordChecksConfig()
    #: Request bodies are refused (413) beyond these sizes before they are read: a
    #: config file for /config/validate and /config/apply (1 MiB is some 20,000 lines,
    #: and parsing takes about 3 s per MiB), a few fields for the rest.
    max_body: Size = Field(64 * 1024, ge=1024, le=1024 * 1024)
    max_config_body: Size = Field(1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ProcessLimits(Strict):
    """Limits of each medlb process as a whole (the per-service ones are `Limits`)."""

    #: Open-file descriptors each process keeps for what is not a relayed connection:
    #: the admin API and its clients, the store, logs, worker channels. Listen sockets,
    #: health checks and server connection pools are added from the config.
    descriptor_reserve: int = Field(128, ge=16, le=1_000_000)


def _workers(value: Any) -> Any:
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return value


# --- the clustered pair (ha:) ---------------------------------------------------------

#: Node and interface names are written into keepalived's config and into file names
#: as they stand, so they are held to patterns that cannot carry a quote, a space, a
#: brace, a '#' or a '/' (medlb.ha.keepalived renders them).
HA_NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
HA_INTERFACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"
#: VRRPv3 carries the advertisement interval in centiseconds in 12 bits (RFC 5798 5.2.7).
ADVERT_INTERVAL_MIN = 0.01
ADVERT_INTERVAL_MAX = 40.95
#: keepalived puts at most 20 addresses in an advertisement; more go unannounced.
HA_MAX_VIPS = 20


def _usable_ipv4(address: ipaddress.IPv4Address, what: str) -> ipaddress.IPv4Address:
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local \
            or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{address} cannot be {what}: VRRP runs between two hosts' addresses on a shared "
                         "segment (not loopback, 0.0.0.0, multicast, link-local or broadcast)")
    return address


def _parse_vip(value: Any) -> Any:
    """`198.18.0.100/24`: the prefix is required, it is the one the VIP gets on the interface."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"expected an IPv4 address with its prefix length, such as 198.18.0.100/24, got {value!r}")
    try:
        vip = ipaddress.IPv4Interface(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address with a prefix length, such as 198.18.0.100/24") from None
    _usable_ipv4(vip.ip, "a VIP")
    if vip.network.prefixlen <= 30 and vip.ip in (vip.network.network_address, vip.network.broadcast_address):
        raise ValueError(f"{vip.ip} is the {'network' if vip.ip == vip.network.network_address else 'broadcast'} "
                         f"address of {vip.network}; a VIP is a host address")
    return vip


class HaNode(Strict):
    """One node of the pair: the name operators and pages call it, the address VRRP
    advertisements come from, and its priority in the election."""

    name: str
    address: ipaddress.IPv4Address
    #: 1 to 254: 255 means the owner of the VIPs in VRRP, which neither node is.
    priority: int = Field(ge=1, le=254)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(HA_NODE_NAME_PATTERN, value):
            raise ValueError(f"{value!r} is not a node name: 1 to 32 letters, digits, '-' or '_', "
                             "starting with a letter or digit")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        return _usable_ipv4(value, "a node address")


class HaConfig(Strict):
    """The clustered pair: two nodes behind floating VIPs that keepalived (VRRPv3,
    unicast between the two node addresses) moves. The file is the same on both
    nodes; a node finds itself in `nodes`. See docs/ha.md."""

    nodes: list[HaNode]
    #: Where VRRP runs and the VIPs are added, on both nodes.
    interface: str
    #: 1 to 255, unique among the VRRP routers on the segment.
    virtual_router_id: int = Field(ge=1, le=255)
    #: How often the active node advertises; the passive one takes over about 3 of them
    #: after the last it heard. A multiple of 10 ms from 10 ms to 40.95 s (VRRPv3).
    advert_interval: Duration = 1.0
    #: Whether the higher-priority node takes the VIPs back when it returns.
    preempt: bool = False
    vips: list[Annotated[ipaddress.IPv4Interface, BeforeValidator(_parse_vip)]] = Field(min_length=1)
    #: The secret both nodes share to authenticate their sync requests (VRRPv3 has none).
    sync_token_file: str = Field(min_length=1)
    #: How long a starting node waits for its peer's operator decisions before its
    #: track script may say alive (so before it may become active) when the peer does
    #: not answer. 0 to not wait.
    decisions_wait: Duration = Field(default=5.0, ge=0.0, le=300.0)
    #: How often the active node copies its source-IP persistence entries to the
    #: passive one: what a failover can lose is the entries made in the last interval.
    persistence_sync_interval: Duration = Field(default=2.0, ge=0.5, le=60.0)
    #: How often each node asks its peer's status (up or down, role, config and
    #: decisions in sync): how late the page, the metrics and the catch-ups learn of a
    #: change on the peer. One small request each time.
    peer_check_interval: Duration = Field(default=1.0, ge=0.2, le=60.0)
    #: How long a status call, a decision push or a persistence push may take before the
    #: peer counts as unreachable for it. One value for the three, and 5 s rather than
    #: the 2 s a status call needs: before answering a push the peer has its workers
    #: route by the decisions (up to 1 s) or take the entries (up to 2 s for a worker's
    #: answer), so 2 s would call a busy but working peer unreachable and push again.
    #: The cost: a peer whose packets are dropped (not refused, as a stopped one's
    #: are) shows as down after 5 s rather than 2; keepalived, not this, moves the VIPs.
    peer_timeout: Duration = Field(default=5.0, ge=0.2, le=60.0)
    #: How long the peer may take to prepare a config (check it, bind, load
    #: certificates, ask its workers), to commit it, or to hand over its own; and how
    #: long the peer keeps a prepared config (with its reload lock held) for the commit.
    #: 30 s: a prepare may wait up to 10 s for a reload in progress on the peer, then
    #: 5 s for its workers (30 s for one just started); a peer slower than this counts
    #: as unreachable: the active node commits alone and catches the peer up later.
    config_sync_timeout: Duration = Field(default=30.0, ge=1.0, le=600.0)

    @field_validator("nodes")
    @classmethod
    def _two(cls, value: list[HaNode]) -> list[HaNode]:
        if len(value) != 2:
            raise ValueError(f"the pair has exactly two nodes in this release, not {len(value)}")
        return value

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        if not re.fullmatch(HA_INTERFACE_PATTERN, value):
            raise ValueError(f"{value!r} is not an interface name: 1 to 15 letters, digits, '_', '.' or '-', "
                             "as `ip link` shows it")
        return value

    @field_validator("advert_interval")
    @classmethod
    def _centiseconds(cls, value: float) -> float:
        if not ADVERT_INTERVAL_MIN <= value <= ADVERT_INTERVAL_MAX:
            raise ValueError("advert_interval must be from 10ms to 40.95s (VRRPv3 carries it in 12 bits of "
                             "centiseconds)")
        if abs(value * 100 - round(value * 100)) > 1e-6:
            raise ValueError(f"advert_interval must be a multiple of 10ms (VRRPv3 counts centiseconds); "
                             f"{round(value * 1000, 3):g}ms is not")
        return round(value * 100) / 100

    @field_validator("vips")
    @classmethod
    def _few(cls, value: list[ipaddress.IPv4Interface]) -> list[ipaddress.IPv4Interface]:
        if len(value) > HA_MAX_VIPS:
            raise ValueError(f"at most {HA_MAX_VIPS} VIPs: a VRRP advertisement lists at most {HA_MAX_VIPS} "
                             "addresses")
        return value

    @property
    def advert_centiseconds(self) -> int:
        return round(self.advert_interval * 100)


class Config(Strict):
    admin: AdminConfig | None = None
    state_dir: str = "./var"
    #: Data-plane processes sharing the listen sockets; `auto` (default) is one per core
    #: this process may run on. 1 runs everything in one process.
    workers: Annotated[int, BeforeValidator(_workers), Field(ge=1, le=64)] = "auto"  # type: ignore[assignment]
    log: LogConfig = LogConfig()
    limits: ProcessLimits = ProcessLimits()
    stop_timeout: Duration = 30.0
    services: list[ServiceConfig] = []
    #: The clustered pair; None: this node runs alone.
    ha: HaConfig | None = None
