"""The service's access control: client certificates, admin-signed tokens, read and write rules,
and a real TLS handshake with the server context (no Fabric needed)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from fedfabric.fl_worker.service._access import (
    Access,
    AccessError,
    Caller,
    issue_token,
    revoke,
    token_id,
)
from fedfabric.network import load_topology
from fedfabric.network._crypto import generate_org, msp_roots_dir, org_dir, server_tls

OWN, OTHER = "TransportMSP", "EnergyMSP"
DAY = dt.timedelta(days=1)


def _name(cn: str, domain: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, domain)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Identity:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class CA:
    """A test MSP CA of ``domain`` (a fresh key each time: same names, different CA)."""

    domain: str
    me: Identity

    @classmethod
    def make(cls, domain: str) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"ca.{domain}", domain)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(domain, Identity(cert, key))

    def issue(
        self, user: str, role: str | None, *, start: float = -1, end: float = 365
    ) -> Identity:
        """An identity ``user@domain`` with OU ``role``, valid from ``start`` to ``end`` days."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{user}@{self.domain}", self.domain, role))
            .issuer_name(self.me.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + start * DAY)
            .not_valid_after(now + end * DAY)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .sign(self.me.key, hashes.SHA256())
        )
        return Identity(cert, key)


CAS = {OWN: CA.make("transport.example"), OTHER: CA.make("energy.example")}
FOREIGN = CA.make("transport.example")  # the same names as TransportMSP's CA, another key
ROOTS = {msp: ca.me.pem for msp, ca in CAS.items()}
ADMIN = CAS[OWN].issue("Admin", "admin")
CLIENT = CAS[OWN].issue("User1", "client")
OTHER_ADMIN = CAS[OTHER].issue("Admin", "admin")


@pytest.fixture
def access(tmp_path: Path) -> Access:
    return Access(ROOTS, OWN, revoked=tmp_path / "revoked")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(signer: Identity, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A token signed (ES256) by ``signer`` whatever its certificate: what issue_token refuses."""
    now = int(time.time())
    head = {"alg": "ES256", "x5c": [base64.b64encode(signer.der).decode()], **(header or {})}
    body = {"iss": OWN, "sub": "x", "role": "reader", "iat": now, "exp": now + 60, "jti": "j1"}
    signing_input = ".".join(_b64url(json.dumps(p).encode()) for p in (head, body | claims))
    r, s = decode_dss_signature(signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _reader_token(ttl: float = 600, **kwargs: Any) -> str:
    return issue_token(
        ADMIN.pem,
        ADMIN.key_pem,
        ROOTS,
        subject="dashboard",
        role="reader",
        ttl_seconds=ttl,
        **kwargs,
    )


def _refusal(call: Any, *args: Any) -> AccessError:
    with pytest.raises(AccessError) as info:
        call(*args)
    return info.value


# --- client certificates


@pytest.mark.parametrize("role", ["admin", "client", "peer", "orderer"])
def test_a_client_certificate_of_each_role_is_its_caller(access: Access, role: str) -> None:
    der = CAS[OTHER].issue("node0", role).der

    assert access.from_certificate(der) == Caller(
        OTHER, role, "node0@energy.example", "certificate"
    )


def test_a_certificate_from_a_foreign_ca_with_the_same_names_is_refused(access: Access) -> None:
    error = _refusal(access.from_certificate, FOREIGN.issue("Admin", "admin").der)

    assert error.status == 401
    assert error.reason == (
        "client certificate 'Admin@transport.example' not issued by a CA of this consortium "
        "(issuer CN=ca.transport.example,O=transport.example: its signature does not verify "
        "with TransportMSP's CA key)"
    )


def test_a_certificate_of_an_unknown_ca_is_refused_naming_its_issuer(access: Access) -> None:
    error = _refusal(access.from_certificate, CA.make("elsewhere.org").issue("Bob", "admin").der)

    assert (error.status, error.reason) == (
        401,
        "client certificate 'Bob@elsewhere.org' not issued by a CA of this consortium "
        "(issuer CN=ca.elsewhere.org,O=elsewhere.org)",
    )


def test_expired_not_yet_valid_and_roleless_certificates_are_refused(access: Access) -> None:
    expired = _refusal(
        access.from_certificate, CAS[OWN].issue("Old", "client", start=-9, end=-2).der
    )
    early = _refusal(access.from_certificate, CAS[OWN].issue("New", "client", start=2, end=9).der)
    roleless = _refusal(access.from_certificate, CAS[OWN].issue("Nobody", None).der)

    assert expired.status == early.status == roleless.status == 401
    assert expired.reason.startswith("client certificate 'Old@transport.example' expired at 20")
    assert early.reason.startswith("client certificate 'New@transport.example' not valid before")
    assert "has no single role OU" in roleless.reason


def test_a_valid_certificate_is_refused_once_the_clock_passes_its_end() -> None:
    later = Access(ROOTS, OWN, clock=lambda: time.time() + 400 * 86400)

    assert "expired at" in _refusal(later.from_certificate, CLIENT.der).reason


# --- tokens


def test_a_token_round_trips_for_readers_and_admins(access: Access) -> None:
    admin = issue_token(
        ADMIN.pem, ADMIN.key_pem, ROOTS, subject="ops", role="admin", ttl_seconds=60
    )
    reader = _reader_token()

    assert access.from_token(reader) == Caller(OWN, "reader", "dashboard", "token")
    assert access.from_token(admin) == Caller(OWN, "admin", "ops", "token")
    header = json.loads(base64.urlsafe_b64decode(reader.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    assert base64.b64decode(header["x5c"][0]) == ADMIN.der
    assert len(token_id(reader)) == 32 and token_id(reader) != token_id(admin)


def test_a_token_of_another_organisation_is_an_identity_that_may_read(access: Access) -> None:
    token = issue_token(
        OTHER_ADMIN.pem, OTHER_ADMIN.key_pem, ROOTS, subject="d", role="reader", ttl_seconds=60
    )

    caller = access.from_token(token)

    assert caller == Caller(OTHER, "reader", "d", "token")
    access.require_read(caller)


def _tampered_payload() -> str:
    head, payload, sig = _reader_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return f"{head}.{_b64url(json.dumps(claims | {'role': 'admin'}).encode())}.{sig}"


def _alg_none() -> str:
    head, payload, _ = _reader_token().split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    return f"{_b64url(json.dumps(header | {'alg': 'none'}).encode())}.{payload}."


BAD_TOKENS = {
    "tampered payload": (_tampered_payload, "token signature does not verify with token cert"),
    "alg none": (_alg_none, "token algorithm 'none' refused: only ES256"),
    "non-admin x5c": (
        lambda: _forge(CLIENT),
        "token certificate 'User1@transport.example' is not an admin's (OU=admin)",
    ),
    "foreign x5c": (
        lambda: _forge(FOREIGN.issue("Admin", "admin")),
        "token certificate 'Admin@transport.example' not issued by a CA of this consortium",
    ),
    "other org's x5c": (
        lambda: _forge(OTHER_ADMIN),
        "token claims issuer TransportMSP but its certificate is EnergyMSP's",
    ),
    "expired": (lambda: _reader_token(now=time.time() - 3600), "token expired at 20"),
    "issued in the future": (
        lambda: _forge(ADMIN, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200),
        "token issued in the future",
    ),
    "unknown role": (lambda: _forge(ADMIN, role="owner"), "token role 'owner' is not one of"),
    "unknown issuer": (lambda: _forge(ADMIN, iss="EvilMSP"), "token issuer 'EvilMSP' is not an"),
    "garbage": (lambda: "not-a-token", "token is not a compact JWS"),
    "garbage parts": (lambda: "a.b.c", "token parts are not base64url-encoded JSON"),
}


def test_bad_tokens_are_each_refused_with_their_own_reason(access: Access) -> None:
    reasons = {}
    for case, (make, expected) in BAD_TOKENS.items():
        error = _refusal(access.from_token, make())
        assert error.status == 401, case
        assert error.reason.startswith(expected), (case, error.reason)
        reasons[case] = error.reason

    assert len(set(reasons.values())) == len(BAD_TOKENS)


def test_a_revoked_token_is_refused_and_the_file_is_reread(access: Access, tmp_path: Path) -> None:
    token, other = _reader_token(), _reader_token()
    assert access.from_token(token).role == "reader"  # no revocation file: nothing revoked

    jti = revoke(tmp_path / "revoked", token)
    assert revoke(tmp_path / "revoked", jti) == jti == token_id(token)

    assert _refusal(access.from_token, token).reason == f"token {jti} has been revoked"
    assert (tmp_path / "revoked").read_text() == f"{jti}\n"
    assert access.from_token(other).name == "dashboard"
    revoke(tmp_path / "revoked", other)
    assert "has been revoked" in _refusal(access.from_token, other).reason


def test_issue_token_refuses_what_it_cannot_sign() -> None:
    def issue(who: Identity = ADMIN, key: bytes | None = None, **kw: Any) -> None:
        args: dict[str, Any] = {"subject": "s", "role": "reader", "ttl_seconds": 60} | kw
        issue_token(who.pem, key or who.key_pem, ROOTS, **args)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"who": CLIENT}, "certificate 'User1@transport.example' is client's, not an admin's"),
        ({"who": FOREIGN.issue("Admin", "admin")}, "not issued by a CA of this consortium"),
        ({"key": CLIENT.key_pem}, "the key is not the key of certificate"),
        ({"role": "owner"}, "role must be one of reader, admin, got 'owner'"),
        ({"ttl_seconds": 0}, "ttl_seconds must be positive, got 0"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ValueError, match=expected):
            issue(**kwargs)


# --- authorisation and request parts


def test_require_write_allows_own_admins_only(access: Access) -> None:
    admin_token = issue_token(
        ADMIN.pem, ADMIN.key_pem, ROOTS, subject="ops", role="admin", ttl_seconds=60
    )
    access.require_write(access.from_certificate(ADMIN.der))
    access.require_write(access.from_token(admin_token))

    refused = {
        "own client": access.from_certificate(CLIENT.der),
        "reader token": access.from_token(_reader_token()),
        "other admin": access.from_certificate(OTHER_ADMIN.der),
    }
    errors = {case: _refusal(access.require_write, caller) for case, caller in refused.items()}

    assert {e.status for e in errors.values()} == {403}
    need = "writes through TransportMSP's service need a TransportMSP admin; "
    assert (
        errors["own client"].reason
        == need + "TransportMSP client 'User1@transport.example' is not one"
    )
    assert (
        errors["reader token"].reason == need + "TransportMSP reader 'dashboard' (token) is not one"
    )
    assert (
        errors["other admin"].reason == need + "EnergyMSP admin 'Admin@energy.example' is not one"
    )
    for caller in refused.values():
        access.require_read(caller)


def test_require_read_refuses_identities_outside_the_consortium(access: Access) -> None:
    error = _refusal(access.require_read, Caller("EvilMSP", "admin", "x", "certificate"))

    assert error.status == 403 and "EvilMSP admin 'x' is not one" in error.reason


def test_request_parts_certificate_then_header_then_query(access: Access) -> None:
    admin_token = issue_token(
        ADMIN.pem, ADMIN.key_pem, ROOTS, subject="ops", role="admin", ttl_seconds=60
    )
    bearer = f"Bearer {_reader_token()}"

    assert access.from_request_parts(CLIENT.der, bearer, admin_token).via == "certificate"
    assert access.from_request_parts(None, bearer, admin_token).role == "reader"
    assert access.from_request_parts(None, None, admin_token).role == "admin"
    basic = _refusal(access.from_request_parts, None, "Basic dXNlcjpwdw==", admin_token)
    assert basic.reason == "Authorization header must be 'Bearer <token>'"
    nothing = _refusal(access.from_request_parts, None, None, None)
    assert (nothing.status, nothing.reason) == (
        401,
        "no credentials: present a client certificate of a consortium organisation, "
        "or a token (Authorization: Bearer ...)",
    )


# --- real material and a real TLS handshake


@pytest.fixture(scope="module")
def crypto(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crypto")
    topology = load_topology()
    for org in topology.organizations:
        generate_org(topology, org.msp_id, folder)
    return folder


def _user_msp(crypto: Path, domain: str, user: str) -> tuple[Path, Path]:
    msp = crypto / "peerOrganizations" / domain / "users" / f"{user}@{domain}" / "msp"
    return next((msp / "signcerts").glob("*.pem")), msp / "keystore" / "priv_sk"


async def test_a_real_tls_handshake_maps_client_certificates(crypto: Path, tmp_path: Path) -> None:
    topology = load_topology()
    transport = topology.org("transport")
    access = Access.from_roots_dir(msp_roots_dir(crypto), "TransportMSP")
    tlsca = org_dir(crypto, transport) / "tlsca"
    context = access.server_ssl_context(*server_tls(tmp_path / "svc", tlsca, "127.0.0.1"))
    seen: list[Caller | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen.append(access.from_certificate(der) if der else None)
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def greeting(pair: tuple[Path, Path] | None, tls: ssl.TLSVersion | None = None) -> bytes:
        client = ssl.create_default_context(cafile=next(tlsca.glob("*-cert.pem")))
        client.maximum_version = tls or client.maximum_version
        if pair:
            client.load_cert_chain(*pair)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        try:
            return await reader.readline()
        finally:
            writer.close()
            await writer.wait_closed()

    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    foreign = FOREIGN.issue("Admin", "admin")
    (foreign_dir / "cert.pem").write_bytes(foreign.pem)
    (foreign_dir / "key.pem").write_bytes(foreign.key_pem)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        energy = topology.org("energy").domain
        assert await greeting(_user_msp(crypto, energy, "Admin")) == b"hello\n"
        assert await greeting(None) == b"hello\n"
        foreign_pair = (foreign_dir / "cert.pem", foreign_dir / "key.pem")
        # TLS 1.3: the client's handshake ends first; the server's refusal then ends the stream.
        try:
            assert await greeting(foreign_pair) == b""
        except (ssl.SSLError, ConnectionError):
            pass
        with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.2: the handshake fails
            await greeting(foreign_pair, ssl.TLSVersion.TLSv1_2)

    assert seen == [Caller("EnergyMSP", "admin", f"Admin@{energy}", "certificate"), None]
