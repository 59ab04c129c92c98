"""Who is calling an organisation's service, and what they may do.

A caller proves an identity of the consortium in one of two ways:

- a TLS client certificate: an MSP signing certificate issued by one of the organisations' MSP
  CAs (the channel's MSP roots); its subject OU gives the role (``admin``, ``client``, ``peer``,
  ``orderer``);
- a token: a compact JWS (ES256) that an organisation's admin signed with its MSP key, the admin
  certificate in the header's ``x5c``; its claims give the issuing organisation (``iss``), the
  subject (``sub``), the role (``reader`` or ``admin``) and the expiry (``exp``). A token is
  revoked by listing its ``jti`` in the revocation file (`revoke`).

Any consortium identity may read; only an admin of the service's own organisation may write.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

CERT_ROLES = ("admin", "client", "peer", "orderer")
TOKEN_ROLES = ("reader", "admin")
CLOCK_SKEW = 60.0
_MAX_TOKEN = 16_384
_YEAR_9999 = 253_402_300_799
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_JTI = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Caller:
    """An authenticated identity: its organisation, role, name and how it was proved."""

    msp_id: str
    role: str
    name: str
    via: str  # "certificate" | "token"

    def __str__(self) -> str:
        via = " (token)" if self.via == "token" else ""
        return f"{self.msp_id} {self.role} {self.name!r}{via}"


class AccessError(Exception):
    """A refusal: ``status`` 401 (unknown caller) or 403 (not allowed), ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(part: str) -> bytes:
    if not _B64URL.fullmatch(part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _identity(
    cert: x509.Certificate, roots: Mapping[str, x509.Certificate], now: float, what: str
) -> tuple[str, str]:
    """(MSP id, role) of ``cert``: issued by one of ``roots`` (issuer name and signature),
    valid at ``now``, with one role OU; else AccessError 401 naming what is wrong."""
    named = [msp for msp, root in roots.items() if root.subject == cert.issuer]
    msp = next((m for m in named if _signed_by(cert, roots[m])), None)
    if msp is None:
        bad = f": its signature does not verify with {', '.join(named)}'s CA key" if named else ""
        issuer = cert.issuer.rfc4514_string()
        raise AccessError(
            401, f"{what} not issued by a CA of this consortium (issuer {issuer}{bad})"
        )
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    if now < start:
        raise AccessError(401, f"{what} not valid before {_utc(start)}")
    if now > end:
        raise AccessError(401, f"{what} expired at {_utc(end)}")
    ous = [
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    roles = [ou for ou in ous if ou in CERT_ROLES]
    if len(roles) != 1:
        raise AccessError(401, f"{what} has no single role OU ({', '.join(CERT_ROLES)}): OU={ous}")
    return msp, roles[0]


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


class Access:
    """Authentication (certificate or token) and authorisation for ``own_msp_id``'s service;
    ``roots`` maps each consortium MSP id to the PEM of its MSP CA certificate."""

    def __init__(
        self,
        roots: Mapping[str, bytes],
        own_msp_id: str,
        *,
        revoked: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.roots: dict[str, x509.Certificate] = {}
        for msp, pem in roots.items():
            try:
                self.roots[msp] = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise ValueError(f"CA certificate of {msp} is not a PEM certificate") from exc
        if own_msp_id not in self.roots:
            raise ValueError(f"{own_msp_id} is not one of the consortium's MSPs {sorted(roots)}")
        self.own_msp_id = own_msp_id
        self.revoked = revoked
        self.clock = clock
        self._revoked_seen: tuple[int, int] | None = None
        self._revoked_ids: frozenset[str] = frozenset()

    @classmethod
    def from_roots_dir(
        cls, folder: Path, own_msp_id: str, *, revoked: Path | None = None
    ) -> Access:
        """An `Access` trusting the ``<MSP id>.pem`` files of ``folder`` (`msp_roots_dir`)."""
        roots = read_roots(folder)
        if not roots:
            raise ValueError(f"no <MSP id>.pem CA certificates in {folder}")
        return cls(roots, own_msp_id, revoked=revoked)

    def from_certificate(self, der: bytes) -> Caller:
        """The caller of a TLS client certificate (DER), checked against the roots."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise AccessError(401, "client certificate is not a DER X.509 certificate") from None
        msp, role = _identity(cert, self.roots, self.clock(), f"client certificate {_cn(cert)!r}")
        return Caller(msp, role, _cn(cert), "certificate")

    def from_token(self, token: str) -> Caller:
        """The caller of a token (see the module docstring); AccessError 401 if it is not valid."""
        parts = token.split(".")
        if len(token) > _MAX_TOKEN or len(parts) != 3:
            raise AccessError(401, "token is not a compact JWS (header.payload.signature)")
        try:
            header = json.loads(_unb64url(parts[0]))
            claims = json.loads(_unb64url(parts[1]))
        except (ValueError, UnicodeDecodeError):
            raise AccessError(401, "token parts are not base64url-encoded JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AccessError(401, "token header and payload must be JSON objects")
        if header.get("alg") != "ES256":
            raise AccessError(401, f"token algorithm {header.get('alg')!r} refused: only ES256")
        cert = _x5c_cert(header)
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss not in self.roots:
            raise AccessError(401, f"token issuer {iss!r} is not an organisation of the consortium")
        what, now = f"token certificate {_cn(cert)!r}", self.clock()
        msp, cert_role = _identity(cert, self.roots, now, what)
        if msp != iss:
            raise AccessError(401, f"token claims issuer {iss} but its certificate is {msp}'s")
        if cert_role != "admin":
            raise AccessError(401, f"{what} is not an admin's (OU=admin): only admins issue tokens")
        key = cert.public_key()
        signature = _unb64url(parts[2]) if _B64URL.fullmatch(parts[2]) else b""
        if (
            len(signature) != 64
            or not isinstance(key, ec.EllipticCurvePublicKey)
            or key.curve.name != "secp256r1"
        ):
            raise AccessError(401, "token signature is not an ES256 (P-256 r||s) signature")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            key.verify(
                encode_dss_signature(r, s),
                f"{parts[0]}.{parts[1]}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            raise AccessError(401, f"token signature does not verify with {what}") from None
        return self._check_claims(claims, now)

    def _check_claims(self, claims: dict[str, Any], now: float) -> Caller:
        exp, iat, sub, role, jti = (claims.get(k) for k in ("exp", "iat", "sub", "role", "jti"))
        if not all(type(v) is int and 0 <= v < _YEAR_9999 for v in (exp, iat)):
            raise AccessError(401, "token claims 'exp' and 'iat' must be integer times")
        if not all(isinstance(v, str) and v for v in (sub, role, jti)):
            raise AccessError(401, "token claims 'sub', 'role' and 'jti' must be strings")
        assert isinstance(exp, int) and isinstance(iat, int)
        if now > exp + CLOCK_SKEW:
            raise AccessError(401, f"token expired at {_utc(exp)}")
        if iat > now + CLOCK_SKEW:
            raise AccessError(401, f"token issued in the future (iat {_utc(iat)})")
        if role not in TOKEN_ROLES:
            raise AccessError(401, f"token role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
        if jti in self._revoked_jtis():
            raise AccessError(401, f"token {jti} has been revoked")
        return Caller(str(claims["iss"]), str(role), str(sub), "token")

    def _revoked_jtis(self) -> frozenset[str]:
        if self.revoked is None:
            return frozenset()
        try:
            st = os.stat(self.revoked)
        except FileNotFoundError:
            return frozenset()
        if (st.st_mtime_ns, st.st_size) != self._revoked_seen:
            lines = self.revoked.read_text().split()
            self._revoked_ids = frozenset(lines)
            self._revoked_seen = (st.st_mtime_ns, st.st_size)
        return self._revoked_ids

    def from_request_parts(
        self, peer_cert_der: bytes | None, authorization: str | None, query_token: str | None
    ) -> Caller:
        """The caller of a request: its client certificate, else its ``Authorization: Bearer``
        token, else its query token."""
        if peer_cert_der:
            return self.from_certificate(peer_cert_der)
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AccessError(401, "Authorization header must be 'Bearer <token>'")
            return self.from_token(token.strip())
        if query_token:
            return self.from_token(query_token)
        raise AccessError(
            401,
            "no credentials: present a client certificate of a consortium organisation, "
            "or a token (Authorization: Bearer ...)",
        )

    def require_read(self, caller: Caller) -> None:
        """Reads are open to every consortium identity."""
        if caller.msp_id not in self.roots or caller.role not in {*CERT_ROLES, *TOKEN_ROLES}:
            raise AccessError(403, f"reads need a consortium identity; {caller} is not one")

    def require_write(self, caller: Caller) -> None:
        """Writes need an admin of the service's own organisation (certificate or token)."""
        if caller.msp_id != self.own_msp_id or caller.role != "admin":
            own = self.own_msp_id
            raise AccessError(
                403, f"writes through {own}'s service need a {own} admin; {caller} is not one"
            )

    def server_ssl_context(self, cert: Path, key: Path) -> ssl.SSLContext:
        """A TLS (>= 1.2) server context asking for, not requiring, a client certificate
        issued by a consortium MSP CA (token callers come without one)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        pems = (c.public_bytes(serialization.Encoding.PEM).decode() for c in self.roots.values())
        context.load_verify_locations(cadata="".join(pems))
        context.verify_mode = ssl.CERT_OPTIONAL
        return context


def _x5c_cert(header: dict[str, Any]) -> x509.Certificate:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise AccessError(401, "token header has no x5c certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (ValueError, binascii.Error):
        raise AccessError(401, "token x5c is not a base64 DER X.509 certificate") from None


def read_roots(folder: Path) -> dict[str, bytes]:
    """MSP id → PEM of each ``<MSP id>.pem`` CA certificate in `folder` (`msp_roots_dir`)."""
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.pem"))}


def issue_token(
    admin_cert_pem: bytes,
    admin_key_pem: bytes,
    roots: Mapping[str, bytes],
    *,
    subject: str,
    role: str,
    ttl_seconds: float,
    now: float | None = None,
) -> str:
    """A token for ``subject`` with ``role`` (reader or admin), valid ``ttl_seconds``, signed by
    an organisation's admin (certificate and key PEM) whose CA is one of ``roots``."""
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {', '.join(TOKEN_ROLES)}, got {role!r}")
    if not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    if not subject:
        raise ValueError("subject must not be empty")
    cert = x509.load_pem_x509_certificate(admin_cert_pem)
    key = serialization.load_pem_private_key(admin_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the admin key must be an ECDSA P-256 key")
    if key.public_key() != cert.public_key():
        raise ValueError(f"the key is not the key of certificate {_cn(cert)!r}")
    loaded = {msp: x509.load_pem_x509_certificate(pem) for msp, pem in roots.items()}
    now = time.time() if now is None else now
    try:
        msp, cert_role = _identity(cert, loaded, now, f"certificate {_cn(cert)!r}")
    except AccessError as exc:
        raise ValueError(exc.reason) from None
    if cert_role != "admin":
        raise ValueError(f"certificate {_cn(cert)!r} is {cert_role}'s, not an admin's (OU=admin)")
    der = cert.public_bytes(serialization.Encoding.DER)
    header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
    claims = {
        "iss": msp,
        "sub": subject,
        "role": role,
        "iat": int(now),
        "exp": int(now + ttl_seconds),
        "jti": secrets.token_hex(16),
    }
    signing_input = ".".join(_b64url(json.dumps(p).encode()) for p in (header, claims))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def token_id(token: str) -> str:
    """The ``jti`` of a token (not verified), e.g. to revoke it."""
    parts = token.strip().split(".")
    try:
        jti = json.loads(_unb64url(parts[1]))["jti"] if len(parts) == 3 else None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        jti = None
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise ValueError("not a token with a jti")
    return jti


def revoke(revoked: Path, token_or_jti: str) -> str:
    """Add a token's jti (or a jti) to the revocation file ``revoked``; return the jti."""
    jti = token_or_jti.strip()
    jti = token_id(jti) if "." in jti else jti
    if not _JTI.fullmatch(jti):
        raise ValueError(f"not a jti: {token_or_jti!r}")
    text = revoked.read_text() if revoked.exists() else ""
    if jti not in text.split():
        revoked.parent.mkdir(parents=True, exist_ok=True)
        with revoked.open("a") as f:
            f.write(("\n" if text and not text.endswith("\n") else "") + f"{jti}\n")
    return jti
