"""The chaincode-as-a-service gRPC server: the peer dials ``protos.Chaincode/Connect``.

The only module of the package that imports gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import grpc
from fabric_protos.peer import chaincode_shim_pb2, chaincode_shim_pb2_grpc

from fedfabric.chaincode._contract import Contract
from fedfabric.chaincode._router import Router
from fedfabric.chaincode._shim import Session

log = logging.getLogger("fedfabric.chaincode")

MAX_MESSAGE_BYTES = 100 * 1024 * 1024  # the peer's default send/receive limit
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Keepalive as permissive as the Go shim: the peer pings every minute even when idle, so
    # accept pings without calls or data and never answer them with GOAWAY.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.server_handshake_timeout_ms", 5_000),
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerTLS:
    """PEM material for the server: its certificate and key, and optionally the CA whose
    client certificates it requires (mutual TLS, ``client_auth_required`` in connection.json).
    """

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


class ChaincodeServer:
    """Serves contracts to peers that dial ``address`` (``HOST:PORT``; port 0 picks one).

    ``chaincode_id`` is the package id the peer installed (``label:hash``), sent in REGISTER.
    Construction checks the contracts (``TypeError``/``ValueError``); ``start`` raises
    ``OSError`` when the address cannot be bound.

    Example::

        async with ChaincodeServer([Assets()], chaincode_id=ccid, address="0.0.0.0:9999"):
            await stop_requested.wait()
    """

    def __init__(
        self,
        contracts: Sequence[Contract],
        *,
        chaincode_id: str,
        address: str,
        tls: ServerTLS | None = None,
    ) -> None:
        if not chaincode_id:
            raise ValueError("chaincode_id must not be empty")
        self.chaincode_id = chaincode_id
        self._router = Router(contracts)
        self._address = address
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self._sessions: set[Session] = set()
        self.port = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` actually bound (after ``start``)."""
        return f"{self._address.rpartition(':')[0]}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving."""
        server = grpc.aio.server(options=_OPTIONS)
        chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(_Servicer(self), server)
        try:
            if self._tls is None:
                self.port = server.add_insecure_port(self._address)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(self._tls.key, self._tls.cert)],
                    root_certificates=self._tls.client_ca,
                    require_client_auth=self._tls.client_ca is not None,
                )
                self.port = server.add_secure_port(self._address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self._address}: {exc}") from exc
        await server.start()
        self._server = server

    async def stop(self, grace: float = 1.0) -> None:
        """Refuse new transactions, give running ones ``grace`` seconds, then close streams."""
        if self._server is None:
            return
        server, self._server = self._server, None
        drains = [session.drain() for session in self._sessions]  # each refuses new work now
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*drains)
        except TimeoutError:
            log.warning("transactions still running after %.1fs; cancelling them", grace)
        # The peer never ends its stream itself, so no grace is left for gRPC to wait on.
        await server.stop(0)

    async def __aenter__(self) -> ChaincodeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _Servicer(chaincode_shim_pb2_grpc.ChaincodeServicer):
    def __init__(self, server: ChaincodeServer) -> None:
        self._server = server

    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802
        log.info("peer connected from %s", context.peer())

        async def read() -> chaincode_shim_pb2.ChaincodeMessage | None:
            msg = await context.read()
            return None if msg is grpc.aio.EOF else msg

        session = Session(self._server._router, self._server.chaincode_id, read, context.write)
        self._server._sessions.add(session)
        try:
            await session.run()
        finally:
            self._server._sessions.discard(session)
        log.info("peer %s disconnected", context.peer())
