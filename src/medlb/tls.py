"""TLS contexts from config, for every side of medlb: listeners, bridging, checks.

The server side (`TlsTerminator`): a default certificate and others chosen by SNI,
the policy (modern: TLS 1.3 only; intermediate: TLS 1.2 with forward-secret AEAD
ciphers), mutual TLS, certificate names and expiry. The client side: the context
medlb re-encrypts to servers with (`backend_tls`) and checks over TLS. Building a
context reads files and raises `TlsSetupError` saying which one is unusable; it never
touches a socket: proxy/tls.py moves the bytes, health/ and the listeners use these.

Reload (SIGHUP) builds new contexts from the files; a listener keeps its `TlsTerminator`
and only the contexts inside are swapped (`adopt`), so established connections keep
theirs and new ones get the new certificates.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlb.config.models import BackendTlsConfig, TlsConfig

#: Forward-secret AEAD ciphers for TLS 1.2 (TLS 1.3 suites are all AEAD and forward secret).
INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
])

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
    """The name a TLS connection to a server asks for and verifies: `backend_tls.server_name`,
    else the server's own host."""
    return config.server_name or host


def check_context(ca: str | None, verify: bool, base_dir: Path | None = None) -> ssl.SSLContext:
    """An `https` check's own context, for a service without backend_tls; a relative
    `ca` is taken from the config file's folder, where `medlb check` reads it."""
    context = ssl.create_default_context(cafile=_resolve(ca, base_dir) if ca is not None else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
