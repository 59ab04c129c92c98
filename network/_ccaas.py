"""Chaincode as a service, the same for every backend: the install package, its id, and the
names and TLS files of the chaincode servers.

One package per chaincode serves every peer: the package's ``connection.json`` holds only what
all peers share (`CONNECTION`); each peer's own connection details are given to fedfabric's
external builder next to the peer (see `fedfabric.network.fabric`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from fedfabric.network import _crypto
from fedfabric.network._layout import Layout
from fedfabric.network._topology import Chaincode, Organization, Peer

CONNECTION = {"dial_timeout": "10s", "tls_required": True, "client_auth_required": True}


def package_bytes(cc: Chaincode) -> bytes:
    """The install package: metadata.json (type ccaas) + code.tar.gz (connection.json).

    Byte-for-byte reproducible (fixed mtimes, no gzip timestamp), so the package id is stable.
    """
    code = _targz({"connection.json": json.dumps(CONNECTION, indent=2).encode()})
    meta = json.dumps({"type": "ccaas", "label": cc.label}).encode()
    return _targz({"metadata.json": meta, "code.tar.gz": code})


def package_id(cc: Chaincode) -> str:
    """``<label>:<sha256 of the package>``, exactly as the peer computes it."""
    return f"{cc.label}:{hashlib.sha256(package_bytes(cc)).hexdigest()}"


def server_name(cc: Chaincode, peer: Peer) -> str:
    """The chaincode server of `cc` next to `peer` (its process, log and compose service)."""
    return f"cc-{cc.name}-{peer.host}"


def server_tls_paths(
    layout: Layout, org: Organization, peer: Peer, cc: Chaincode
) -> tuple[Path, Path, Path]:
    """(TLS cert, key, client CA) of the chaincode server of ``cc`` next to ``peer``."""
    folder = layout.node_dir(peer.host) / "chaincode" / cc.name
    root = _crypto.org_dir(layout.crypto_dir, org)
    return (
        folder / "server.crt",
        folder / "server.key",
        root / "msp" / "tlscacerts" / f"tlsca.{org.domain}-cert.pem",
    )


def server_address(cc: Chaincode, peer: Peer) -> str:
    """Where the chaincode server of `cc` next to `peer` listens, and its peer dials it: the
    peer's address, port ``chaincode_server_port`` + the chaincode's slot."""
    return peer.address_at(peer.chaincode_server_port + cc.slot)


def server_args(layout: Layout, org: Organization, peer: Peer, cc: Chaincode) -> list[str]:
    """The arguments of the chaincode server of `cc` next to `peer`, after its program: a
    Python contract's ``serve ...`` (``python -m fedfabric.chaincode``, or the image's
    entrypoint), or the Node shim's ``server ...``. Mutual TLS with the peer's TLS CA. A
    Python contract's settings: ``msp_id`` (its org), ``ca_certs`` (the channel's MSP roots,
    `_crypto.msp_roots_dir`), then the chaincode's own for that org (which may override)."""
    cert, key, client_ca = server_tls_paths(layout, org, peer, cc)
    address, ccid = server_address(cc, peer), package_id(cc)
    if cc.server != "python":
        return ["server", "--chaincode-address", address, "--chaincode-id", ccid,
                "--chaincode-tls-cert-file", str(cert), "--chaincode-tls-key-file", str(key),
                "--chaincode-tls-client-cacert-file", str(client_ca)]  # fmt: skip
    args = ["serve", "--contract", str(cc.contract), "--address", address, "--chaincode-id",
            ccid, "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca",
            str(client_ca)]  # fmt: skip
    roots = _crypto.msp_roots_dir(layout.crypto_dir)
    settings = {"msp_id": org.msp_id, "ca_certs": str(roots), **cc.settings.get(org.msp_id, {})}
    for k, v in sorted(settings.items()):
        args += ["--setting", f"{k}={v}"]
    return args


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
