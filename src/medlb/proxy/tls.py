"""TLS for every mode: contexts from config, SNI, policies, mutual TLS, reload, expiry.

The listening side is a small TLS layer of its own (`TlsServerProtocol`) over
`ssl.SSLObject` and memory BIOs rather than `loop.create_server(ssl=...)`: it sees the
first bytes of a connection, so a plain-HTTP request sent to a TLS port can be answered
(or redirected) instead of dropped, and it knows when and why a handshake fails, so
handshakes and failures are counted. The mode's own protocol (tcp relay, http) sits on
top of it as on any transport, with the same flow control: when the client's socket
buffer is full the mode is told to pause writing; when the mode pauses reading, the
socket stops being read.

Reload (SIGHUP) builds new contexts from the files; a listener keeps its `TlsTerminator`
and only the contexts inside are swapped, so established connections keep theirs and new
ones get the new certificates.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medlb.config.models import BackendTlsConfig, TlsConfig
from medlb.logs import get_logger

log = get_logger("medlb.tls")

#: Forward-secret AEAD ciphers for TLS 1.2 (TLS 1.3 suites are all AEAD and forward secret).
INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
])

TLS_RECORD_HANDSHAKE = 0x16


class TlsSetupError(Exception):
    """A certificate, key or CA file that cannot be used; the message says which."""


def _resolve(path: str, base_dir: Path | None) -> str:
    file = Path(path)
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    return str(file)


def apply_policy(context: ssl.SSLContext, policy: str) -> None:
    if policy == "modern":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)


def certificate_not_after(path: str) -> datetime.datetime:
    """The expiry of the first certificate in a PEM file."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.not_valid_after_utc


@dataclass
class CertInfo:
    cert: str
    names: list[str]
    not_after: datetime.datetime

    def days_left(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400


@dataclass
class TlsStats:
    handshakes: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


def _server_context(cert: str, key: str, config: TlsConfig, base_dir: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_policy(context, config.policy)
    try:
        context.load_cert_chain(_resolve(cert, base_dir), _resolve(key, base_dir))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load certificate {cert} with key {key}: {exc}") from None
    if config.verify_client != "none":
        if config.client_ca is None:
            raise TlsSetupError("verify_client needs client_ca")
        try:
            context.load_verify_locations(_resolve(config.client_ca, base_dir))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load client_ca {config.client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED if config.verify_client == "required" else ssl.CERT_OPTIONAL
    return context


def _cert_names(path: str) -> list[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [attr.value.lower() for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                 if isinstance(attr.value, str)]
    return names


class TlsTerminator:
    """The server-side contexts of one service: a default certificate and, by SNI, others."""

    def __init__(self, config: TlsConfig, base_dir: Path | None = None):
        self.stats = TlsStats()
        self.default: ssl.SSLContext
        self.by_name: dict[str, ssl.SSLContext] = {}
        self.certificates: list[CertInfo] = []
        self.config = config
        self.load(config, base_dir)

    def load(self, config: TlsConfig, base_dir: Path | None = None) -> None:
        """Build every context from the files; on any error raise and keep the old ones."""
        pairs: list[tuple[str, str, list[str]]] = []
        if config.cert is not None:
            if config.key is None:
                raise TlsSetupError("tls.cert needs tls.key")
            pairs.append((config.cert, config.key, []))
        pairs += [(c.cert, c.key, c.server_names) for c in config.certificates]
        if not pairs:
            raise TlsSetupError("tls needs cert and key, or certificates")
        contexts: list[ssl.SSLContext] = []
        by_name: dict[str, ssl.SSLContext] = {}
        infos: list[CertInfo] = []
        for cert, key, names in pairs:
            context = _server_context(cert, key, config, base_dir)
            contexts.append(context)
            path = _resolve(cert, base_dir)
            try:
                names = [n.lower() for n in names] or _cert_names(path)
                infos.append(CertInfo(cert, names, certificate_not_after(path)))
            except (OSError, ValueError) as exc:
                raise TlsSetupError(f"cannot read certificate {cert}: {exc}") from None
            for name in names:
                by_name.setdefault(name, context)
        for context in contexts:
            context.sni_callback = self._sni
        self.default, self.by_name, self.certificates, self.config = contexts[0], by_name, infos, config

    def adopt(self, other: "TlsTerminator") -> None:
        """Take the contexts of a freshly loaded terminator (reload), keeping the counters."""
        for context in [other.default, *other.by_name.values()]:
            context.sni_callback = self._sni
        self.default, self.by_name, self.certificates, self.config = (
            other.default, other.by_name, other.certificates, other.config)

    def _sni(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if not server_name:
            return None
        name = server_name.lower()
        chosen = self.by_name.get(name)
        if chosen is None and "." in name:
            chosen = self.by_name.get("*." + name.split(".", 1)[1])
        if chosen is not None and chosen is not context:
            sslobj.context = chosen
        return None

    def new_sslobject(self) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        return self.default.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing

    def min_days_left(self) -> float | None:
        return min((c.days_left() for c in self.certificates), default=None)


def client_context(config: BackendTlsConfig, base_dir: Path | None = None) -> ssl.SSLContext:
    """The context medlb uses to re-encrypt to servers (bridging) and for checks over TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if config.ca is not None:
            context.load_verify_locations(_resolve(config.ca, base_dir))
        else:
            context.load_default_certs()
        if config.cert is not None:
            context.load_cert_chain(_resolve(config.cert, base_dir),
                                    _resolve(config.key, base_dir) if config.key else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load backend_tls files: {exc}") from None
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def backend_server_name(config: BackendTlsConfig, host: str) -> str:
    return config.server_name or host


# --- the listening side's TLS transport --------------------------------------------------


class TlsTransport(asyncio.Transport):
    """What the mode's protocol sees: plaintext in and out of one TLS connection."""

    def __init__(self, owner: "TlsServerProtocol"):
        super().__init__()
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.write_plain(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self._owner.write_plain(b"".join(chunks))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._owner.close()

    def abort(self) -> None:
        self._owner.abort()

    def is_closing(self) -> bool:
        return self._owner.closing

    def pause_reading(self) -> None:
        self._owner.app_paused = True
        if self._owner.raw is not None and not self._owner.raw.is_closing():
            self._owner.raw.pause_reading()

    def resume_reading(self) -> None:
        owner = self._owner
        owner.app_paused = False
        if owner.raw is not None and not owner.raw.is_closing():
            owner.raw.resume_reading()
            owner.flush_plain()

    def is_reading(self) -> bool:
        return not self._owner.app_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._owner.raw is not None:
            self._owner.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._owner.raw.get_write_buffer_size() if self._owner.raw is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        owner = self._owner
        if name == "ssl_object":
            return owner.sslobj
        if name == "peercert":
            return owner.sslobj.getpeercert() if owner.sslobj else default
        if name == "cipher":
            return owner.sslobj.cipher() if owner.sslobj else default
        if name == "tls":
            return True
        return owner.raw.get_extra_info(name, default) if owner.raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._owner.app = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.app  # type: ignore[return-value]


class TlsServerProtocol(asyncio.Protocol):
    """Terminates TLS on an accepted connection, then hands plaintext to `app_factory()`.

    If the first byte is not a TLS handshake record, `plain_factory` (if given) gets the
    connection as plain bytes, with `plain_on_tls=True` on the protocol it returns;
    otherwise the connection is closed and counted as a failure.
    """

    def __init__(self, terminator: TlsTerminator, app_factory: Callable[[], asyncio.Protocol],
                 plain_factory: Callable[[], asyncio.Protocol] | None = None,
                 handshake_timeout: float = 10.0):
        self.terminator = terminator
        self.app_factory = app_factory
        self.plain_factory = plain_factory
        self.handshake_timeout = handshake_timeout
        self.raw: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming: ssl.MemoryBIO | None = None
        self.outgoing: ssl.MemoryBIO | None = None
        self.transport = TlsTransport(self)
        self.handshaken = False
        self.closing = False
        self.app_paused = False
        self.plain = False
        self.eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    # raw side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self.handshake_timeout, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if not self.handshaken and not self.plain:
            self.terminator.stats.fail("timeout")
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self.plain:
            self.app.data_received(data)  # type: ignore[union-attr]
            return
        if self.sslobj is None:
            if data[0] != TLS_RECORD_HANDSHAKE:
                self._not_tls(data)
                return
            self.sslobj, self.incoming, self.outgoing = self.terminator.new_sslobject()
        self.incoming.write(data)  # type: ignore[union-attr]
        if not self.handshaken:
            self._do_handshake()
            if not self.handshaken:
                return
        self.flush_plain()

    def _not_tls(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.plain_factory is None:
            self.terminator.stats.fail("not_tls")
            self.abort()
            return
        self.terminator.stats.fail("plain_http")
        self.plain = True
        self.app = self.plain_factory()
        setattr(self.app, "plain_on_tls", True)
        self.app.connection_made(self.raw)  # type: ignore[arg-type]
        self.raw.set_protocol(self.app)  # type: ignore[union-attr]
        self.app.data_received(data)

    def _do_handshake(self) -> None:
        assert self.sslobj is not None
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._send_outgoing()
            return
        except (ssl.SSLError, OSError) as exc:
            self._send_outgoing()
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            self.terminator.stats.fail(str(reason).lower())
            log.debug("tls_handshake_failed", reason=str(reason), peer=str(self.raw.get_extra_info("peername")))
            self.abort()
            return
        self._send_outgoing()
        self.handshaken = True
        self.terminator.stats.handshakes += 1
        if self._timer is not None:
            self._timer.cancel()
        self.app = self.app_factory()
        self.app.connection_made(self.transport)

    def flush_plain(self) -> None:
        """Decrypt what has arrived and hand it up, unless the mode paused reading."""
        if not self.handshaken or self.sslobj is None or self._lost:
            return
        eof = False
        while not self.app_paused and not self._lost:
            try:
                chunk = self.sslobj.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except (ssl.SSLError, OSError):
                self.abort()
                return
            if not chunk:
                eof = True
                break
            if self.app is not None:
                self.app.data_received(chunk)
        self._send_outgoing()  # session tickets, key updates
        if eof and not self.eof:
            self.eof = True
            if self.app is not None and not self.app.eof_received():
                self.close()

    def _send_outgoing(self) -> None:
        if self.outgoing is not None and self.outgoing.pending and self.raw is not None and not self.raw.is_closing():
            self.raw.write(self.outgoing.read())

    def eof_received(self) -> bool | None:
        if self.plain:
            return self.app.eof_received()  # type: ignore[union-attr]
        if not self.handshaken:
            self.terminator.stats.fail("closed_in_handshake")
            return False
        if not self.eof:
            self.eof = True
            if self.app is not None and self.app.eof_received():
                return True
        return False

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.app is not None:
            self.app.connection_lost(exc)

    # app side
    def write_plain(self, data: bytes) -> None:
        if self.closing or self.sslobj is None:
            return
        view = memoryview(data)
        while view:
            try:
                written = self.sslobj.write(view[:262144])
            except ssl.SSLError:
                self.abort()
                return
            view = view[written:]
        self._send_outgoing()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.sslobj is not None and self.handshaken:
            try:
                self.sslobj.unwrap()
            except (ssl.SSLError, OSError):
                pass
            self._send_outgoing()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()
