"""A connection profile with an Ed25519 identity signs the whole message, as hash.py says."""

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from gateway_fakes import MSP_ID, FakePeer, PeerServer, TlsMaterial, User, issue_cert
from test_connect import write_profile

from fedfabric.gateway import X509Identity, connect_profile


def ed25519_user() -> User:
    key = ed25519.Ed25519PrivateKey.generate()
    issuer = ec.generate_private_key(ec.SECP256R1())
    cert = issue_cert(key, "Ed@org1.example.com", issuer, "ca.org1.example.com")  # type: ignore[arg-type]
    return User(X509Identity(MSP_ID, cert), key)  # type: ignore[arg-type]


async def test_an_ed25519_profile_identity_signs_the_whole_message(
    tmp_path: Path, peer_server: PeerServer, peer: FakePeer, tls: TlsMaterial
) -> None:
    user = ed25519_user()
    path = write_profile(tmp_path, peer_server.endpoint, tls, user)

    async with connect_profile(path, "User1") as gateway:
        await gateway.get_network("mychannel").get_contract("fl").evaluate("Get")

    (request,) = peer.received("Evaluate")
    signed = request.proposed_transaction
    public_key = user.key.public_key()
    try:
        public_key.verify(signed.signature, signed.proposal_bytes)  # type: ignore[call-arg]
    except InvalidSignature as err:
        raise AssertionError("not an Ed25519 signature of the proposal bytes") from err
