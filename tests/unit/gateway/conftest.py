"""Fixtures: generated TLS/MSP material and an in-process fake peer (Gateway + Deliver) over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_fakes import (
    MSP_ID,
    SERVER_NAME,
    FakePeer,
    PeerServer,
    TlsMaterial,
    User,
    issue_cert,
    key_pem,
    start_peer,
)

from fedfabric.gateway import Gateway, X509Identity, connect


@pytest.fixture(scope="session")
def tls() -> TlsMaterial:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    return TlsMaterial(
        ca_cert=issue_cert(ca_key, "tlsca.org1.example.com", is_ca=True),
        server_cert=issue_cert(
            server_key, SERVER_NAME, ca_key, "tlsca.org1.example.com", dns_name=SERVER_NAME
        ),
        server_key=key_pem(server_key),
        client_cert=issue_cert(
            client_key, "User1@org1.example.com", ca_key, "tlsca.org1.example.com"
        ),
        client_key=key_pem(client_key),
    )


@pytest.fixture(scope="session")
def user() -> User:
    key = ec.generate_private_key(ec.SECP256R1())
    return User(X509Identity(MSP_ID, issue_cert(key, "User1@org1.example.com")), key)


@pytest.fixture
async def peer_server(tls: TlsMaterial) -> AsyncIterator[PeerServer]:
    started = await start_peer(tls)
    yield started
    await started.server.stop(grace=None)


@pytest.fixture
def peer(peer_server: PeerServer) -> FakePeer:
    return peer_server.peer


@pytest.fixture
async def gateway(peer_server: PeerServer, tls: TlsMaterial, user: User) -> AsyncIterator[Gateway]:
    async with connect(
        identity=user.identity,
        signer=user.signer,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
    ) as connected:
        yield connected


@pytest.fixture
async def offline_gateway(
    peer_server: PeerServer, tls: TlsMaterial, user: User
) -> AsyncIterator[Gateway]:
    async with connect(
        identity=user.identity,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
    ) as connected:
        yield connected
