"""Read every file a config names, as `medlb run` will, and say which key and which
file fails: token files, certificates, keys and CAs.

`medlb check` passing a file that `medlb run` then refuses (a key that does not match
its certificate, a token file that is not there) costs the operator a failed start or
reload at the worst moment. So the files are read here as the runtime reads them:
PEM certificates and unencrypted PEM keys (with `cryptography`, as config is a sans-I/O
layer that does not import `ssl`), and each key must match its certificate. Relative
paths are taken from the config file's folder, as at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlb.config.models import TLS_MODES, AdminTlsConfig, BackendTlsConfig, TlsConfig
from medlb.config.problems import Locations, PathKey, Problem
from medlb.config.span import valid, written_services

Add = Callable[[PathKey, str], None]


class FileCheck:
    """The files of one config, read from `base_dir`; each failure added at its key."""

    def __init__(self, base_dir: Path, add: Add):
        self.base_dir = base_dir
        self.add = add

    def path(self, written: str) -> Path:
        file = Path(written)
        return file if file.is_absolute() else self.base_dir / file

    def read(self, key: PathKey, written: str) -> bytes | None:
        file = self.path(written)
        try:
            return file.read_bytes()
        except OSError as exc:
            self.add(key, f"cannot read {file}: {exc.strerror}")
            return None

    def secret(self, key: PathKey, written: str) -> str | None:
        """A token file: text whose first line is the secret (returned, as run reads it)."""
        data = self.read(key, written)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.add(key, f"{self.path(written)} is not UTF-8 text")
            return None
        if not text.strip():
            self.add(key, f"{self.path(written)} is empty; it holds the token on its first line")
            return None
        return text.strip().splitlines()[0].strip()

    def certificates(self, key: PathKey, written: str, what: str = "certificate") -> list[Any]:
        from cryptography import x509

        data = self.read(key, written)
        if data is None:
            return []
        if b"-----BEGIN CERTIFICATE-----" not in data:
            self.add(key, f"{self.path(written)} holds no PEM {what} (a -----BEGIN CERTIFICATE----- block)")
            return []
        try:
            return list(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            self.add(key, f"{self.path(written)}: the PEM {what} cannot be read ({exc})")
            return []

    def private_key(self, key: PathKey, written: str) -> Any:
        from cryptography.hazmat.primitives import serialization

        data = self.read(key, written)
        if data is None:
            return None
        if b"PRIVATE KEY-----" not in data:
            self.add(key, f"{self.path(written)} holds no PEM private key (a -----BEGIN PRIVATE KEY----- block)")
            return None
        try:
            return serialization.load_pem_private_key(data, password=None)
        except TypeError:
            self.add(key, f"{self.path(written)}: the private key is encrypted; medlb reads keys without a passphrase")
        except (ValueError, serialization.UnsupportedAlgorithm) as exc:
            self.add(key, f"{self.path(written)}: the PEM private key cannot be read ({exc})")
        return None

    def pair(self, cert_key: PathKey, cert: str, key_key: PathKey, key: str | None) -> None:
        """A certificate and its key (`key` None: the key is in the certificate's file)."""
        from cryptography.hazmat.primitives import serialization

        chain = self.certificates(cert_key, cert)
        private = self.private_key(cert_key if key is None else key_key, key or cert)
        if not chain or private is None:
            return
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if chain[0].public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
            self.add(key_key, f"the key in {self.path(key or cert)} does not match the certificate in "
                              f"{self.path(cert)} (each was read; they are not a pair)")

    def ca(self, key: PathKey, written: str) -> None:
        self.certificates(key, written, "CA certificate")


def file_problems(data: dict[str, Any], base_dir: Path, where: Locations) -> list[Problem]:
    """Every file the config names that cannot be used. Each section that names files
    is validated alone, so a mistake elsewhere in the file hides none of these."""
    problems: list[Problem] = []
    visit_files(FileCheck(base_dir, lambda path, message: problems.append(where.problem(path, message))), data)
    return problems


class _Names(FileCheck):
    """Reads nothing; keeps the path of every file the config names, as written."""

    def __init__(self) -> None:
        super().__init__(Path("."), lambda path, message: None)
        self.named: list[str] = []

    def read(self, key: PathKey, written: str) -> bytes | None:
        if written not in self.named:
            self.named.append(written)
        return None


def named_files(data: dict[str, Any]) -> list[str]:
    """Every file the config names (certificates, keys, CAs, token files), as written:
    what travels with the config to the pair's other node."""
    names = _Names()
    visit_files(names, data)
    return names.named


def visit_files(check: FileCheck, data: dict[str, Any]) -> None:
    """Give `check` every file the config names, at its key."""
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    # The operators' secrets, inline or read from their files.
    operators: list[str | None] = [admin.get("token")]
    if isinstance(admin.get("token_file"), str):
        operators.append(check.secret(("admin", "token_file"), admin["token_file"]))
    tokens = admin.get("tokens") if isinstance(admin.get("tokens"), list) else []
    for index, token in enumerate(tokens):
        if isinstance(token, dict):
            operators.append(token.get("token"))
            if isinstance(token.get("token_file"), str):
                operators.append(check.secret(("admin", "tokens", index, "token_file"), token["token_file"]))
    admin_tls = valid(AdminTlsConfig, admin.get("tls"))
    if admin_tls is not None:
        check.pair(("admin", "tls", "cert"), admin_tls.cert, ("admin", "tls", "key"), admin_tls.key)
    ha = data.get("ha") if isinstance(data.get("ha"), dict) else {}
    if isinstance(ha.get("sync_token_file"), str):
        sync = check.secret(("ha", "sync_token_file"), ha["sync_token_file"])
        if sync is not None and sync in operators:
            # The sync API takes what no operator may (a whole config, decisions as the
            # peer's): one secret for both would let an operator's token act as the peer.
            check.add(("ha", "sync_token_file"), f"{check.path(ha['sync_token_file'])} holds an admin token "
                                                 "of this config: give the pair a secret of its own")
    for index, service in enumerate(written_services(data)):
        _service_files(check, ("services", index), service)


def _service_files(check: FileCheck, base: PathKey, service: dict[str, Any]) -> None:
    """A section this release cannot run in the service's mode (a note of `check`, a
    refusal of `run`) is not read: nothing would use it."""
    tls_mode = service.get("mode", "tcp") in TLS_MODES
    tls = valid(TlsConfig, service.get("tls")) if tls_mode else None
    if tls is not None:
        if tls.cert is not None and tls.key is not None:
            check.pair(base + ("tls", "cert"), tls.cert, base + ("tls", "key"), tls.key)
        for index, item in enumerate(tls.certificates):
            where = base + ("tls", "certificates", index)
            check.pair(where + ("cert",), item.cert, where + ("key",), item.key)
        if tls.client_ca is not None:
            check.ca(base + ("tls", "client_ca"), tls.client_ca)
    backend = valid(BackendTlsConfig, service.get("backend_tls")) if tls_mode else None
    if backend is not None:
        if backend.ca is not None:
            check.ca(base + ("backend_tls", "ca"), backend.ca)
        if backend.cert is not None:
            check.pair(base + ("backend_tls", "cert"), backend.cert, base + ("backend_tls", "key"), backend.key)
    health = service.get("health")
    if isinstance(health, dict) and health.get("type") in ("http", "https") and isinstance(health.get("ca"), str):
        check.ca(base + ("health", "ca"), health["ca"])
