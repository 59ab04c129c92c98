"""Connecting from a connection profile: the per-org JSON file the network module writes.

Shape (relative paths are relative to the profile file)::

    {"msp_id": "Org1MSP", "peer_endpoint": "127.0.0.1:7051",
     "tls_root_cert_path": "...", "server_name": "peer0.org1.example.com",
     "users": {"User1": {"cert_path": "...", "key_path": "...",
                         "client_tls_cert_path": "...", "client_tls_key_path": "..."}}}

The user's ``client_tls_*`` pair (or a profile-wide one) is used for mutual TLS when present.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedfabric.gateway._context import Timeouts
from fedfabric.gateway._gateway import Gateway, connect
from fedfabric.gateway._identity import load_identity, load_private_key
from fedfabric.gateway.signers import new_private_key_signer


def connect_profile(
    profile_path: str | Path, user: str, *, timeouts: Timeouts | None = None
) -> Gateway:
    """Connect as ``user`` of the organisation described by the JSON connection profile.

    Raises ``ValueError`` if the user is not in the profile, ``OSError`` / ``KeyError`` for a
    missing file or field.

    Example::

        async with connect_profile(state_dir / "org1.json", "User1") as gateway:
            ...
    """
    path = Path(profile_path)
    profile = json.loads(path.read_text())
    users = profile["users"]
    if user not in users:
        raise ValueError(f"{path}: no user {user!r} (have: {', '.join(sorted(users))})")

    def file(key: str, entry: dict[str, str] = profile) -> Path:
        return path.parent / entry[key]

    client_cert = client_key = None
    tls_entry = users[user] if users[user].get("client_tls_cert_path") else profile
    if tls_entry.get("client_tls_cert_path"):
        client_cert = file("client_tls_cert_path", tls_entry).read_bytes()
        client_key = file("client_tls_key_path", tls_entry).read_bytes()
    return connect(
        identity=load_identity(profile["msp_id"], file("cert_path", users[user])),
        signer=new_private_key_signer(load_private_key(file("key_path", users[user]))),
        endpoint=profile["peer_endpoint"],
        tls_root_cert=file("tls_root_cert_path").read_bytes(),
        client_cert=client_cert,
        client_key=client_key,
        server_name_override=profile.get("server_name"),
        timeouts=timeouts,
    )


def connect_org(
    material_dir_or_profile: str | Path, org: str, user: str, *, timeouts: Timeouts | None = None
) -> Gateway:
    """Connect as ``user`` of ``org``, given its profile file or the directory holding
    ``<org>.json`` profiles (the layout the network module is expected to write).
    """
    path = Path(material_dir_or_profile)
    profile = path / f"{org}.json" if path.is_dir() else path
    return connect_profile(profile, user, timeouts=timeouts)
