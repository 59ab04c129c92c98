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
from typing import Any

import grpc.aio

from fedfabric.gateway._client import SUBMIT_LINGER
from fedfabric.gateway._context import Timeouts
from fedfabric.gateway._gateway import Gateway, connect, open_channel
from fedfabric.gateway._identity import hash_for_key, load_identity, load_private_key
from fedfabric.gateway.signers import new_private_key_signer


def connect_profile(
    profile_path: str | Path,
    user: str,
    *,
    timeouts: Timeouts | None = None,
    submit_linger: float = SUBMIT_LINGER,
) -> Gateway:
    """Connect as ``user`` of the organisation described by the JSON connection profile
    (``timeouts`` and ``submit_linger`` as `connect` takes them).

    Raises ``ValueError`` if the user is not in the profile, ``OSError`` / ``KeyError`` for a
    missing file or field.

    Example::

        async with connect_profile(state_dir / "org1.json", "User1") as gateway:
            ...
    """
    profile = _Profile(profile_path)
    key = load_private_key(profile.file("key_path", user))
    return connect(
        identity=load_identity(profile.msp_id, profile.file("cert_path", user)),
        signer=new_private_key_signer(key),
        hash=hash_for_key(key),
        timeouts=timeouts,
        submit_linger=submit_linger,
        **profile.endpoint(user),
    )


def profile_channel(profile_path: str | Path, user: str) -> tuple[grpc.aio.Channel, bytes | None]:
    """A channel to the profile's peer with ``user``'s TLS client pair (see `open_channel`),
    and that pair's certificate: pass it as ``connect(channel=..., client_cert=...)`` for each
    identity that shares the channel. Raises as `connect_profile` does."""
    settings = _Profile(profile_path).endpoint(user)
    return open_channel(**settings), settings["client_cert"]


class _Profile:
    """A profile file read once; paths in it are relative to the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data = json.loads(self.path.read_text())
        self.msp_id: str = self.data["msp_id"]

    def user(self, name: str) -> dict[str, str]:
        users = self.data["users"]
        if name not in users:
            raise ValueError(f"{self.path}: no user {name!r} (have: {', '.join(sorted(users))})")
        return users[name]

    def file(self, key: str, user: str | None = None) -> Path:
        entry = self.data if user is None else self.user(user)
        return self.path.parent / entry[key]

    def endpoint(self, user: str) -> dict[str, Any]:
        """`open_channel`'s arguments for ``user`` (its TLS pair, or a profile-wide one)."""
        tls_user = user if self.user(user).get("client_tls_cert_path") else None
        has_pair = bool((self.user(user) if tls_user else self.data).get("client_tls_cert_path"))
        return {
            "endpoint": self.data["peer_endpoint"],
            "tls_root_cert": self.file("tls_root_cert_path").read_bytes(),
            "client_cert": self.file("client_tls_cert_path", tls_user).read_bytes()
            if has_pair
            else None,
            "client_key": self.file("client_tls_key_path", tls_user).read_bytes()
            if has_pair
            else None,
            "server_name_override": self.data.get("server_name"),
        }


def connect_org(
    material_dir_or_profile: str | Path,
    org: str,
    user: str,
    *,
    timeouts: Timeouts | None = None,
    submit_linger: float = SUBMIT_LINGER,
) -> Gateway:
    """Connect as ``user`` of ``org``, given its profile file or the directory holding
    ``<org>.json`` profiles (the layout the network module is expected to write).
    """
    path = Path(material_dir_or_profile)
    profile = path / f"{org}.json" if path.is_dir() else path
    return connect_profile(profile, user, timeouts=timeouts, submit_linger=submit_linger)
