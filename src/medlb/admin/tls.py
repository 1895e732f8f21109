"""The admin listener's certificate: configured files, or a self-signed one.

With `admin.tls: auto` (the default) and no certificate configured, medlb generates an
EC P-256 key and a self-signed certificate into `state_dir/admin-tls/` on first start
and reuses them afterwards; the log prints its SHA-256 fingerprint so an operator can
compare it with what the browser shows. The key file is readable by its owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path


def fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def self_signed(directory: Path, host: str, label: str = "medlb admin") -> tuple[Path, Path, bool]:
    """(cert path, key path, whether it was made now). `label` starts the common name, so
    a browser's certificate view says which of medlb's listeners made it."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path, False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label} {hostname}"[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medlb (self-signed)")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(hostname),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and address not in (ipaddress.ip_address("127.0.0.1"),
                                                          ipaddress.ip_address("::1")):
            alt.append(x509.IPAddress(address))
    except ValueError:
        if host and host not in ("localhost", hostname):
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            # CA:TRUE so that the file itself can be given to clients as the CA to trust
            # (`medlb ctl --ca state_dir/admin-tls/cert.pem`, curl --cacert).
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True
