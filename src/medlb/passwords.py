"""Password hashes for the web page's users: scrypt from the standard library.

Format: `scrypt$N$r$p$SALT$HASH` (salt and hash in unpadded base64). `medlb passwd`
prints one; the config holds only the hash. An `argon2...` hash (argon2-cffi's
format) is accepted when the argon2-cffi package is installed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass

#: 2**15 * 8 * 128 bytes = 32 MiB and tens of milliseconds per check: slow for a
#: guesser, fast enough for a person logging in.
N, R, P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str) -> ScryptHash | str | None:
    """The parsed scrypt hash, the argon2 string as is, or None if it is neither."""
    if encoded.startswith("$argon2"):
        try:
            import argon2  # noqa: F401
        except ImportError:
            return None
        return encoded
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or len(digest) < 16 or len(salt) < 8:
        return None
    if 128 * n * r > _MAXMEM:
        return None
    return ScryptHash(n, r, p, salt, digest)


def verify_password(password: str, encoded: str) -> bool:
    parsed = parse_hash(encoded)
    if parsed is None:
        return False
    if isinstance(parsed, str):
        import argon2

        try:
            return bool(argon2.PasswordHasher().verify(parsed, password))
        except Exception:
            return False
    digest = hashlib.scrypt(password.encode(), salt=parsed.salt, n=parsed.n, r=parsed.r, p=parsed.p,
                            maxmem=_MAXMEM, dklen=len(parsed.digest))
    return hmac.compare_digest(digest, parsed.digest)


@functools.cache
def dummy_hash() -> str:
    """Checked against a name that is not a user, so that a wrong name costs as long as
    a wrong password and timing does not tell which names exist."""
    return hash_password("medlb-dummy-password")
