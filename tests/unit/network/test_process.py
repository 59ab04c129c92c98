"""Node processes are checked and waited on at their own address, not only on 127.0.0.1,
and a running one is known by its command line."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest

from fedfabric.network import NetworkError, PortInUseError
from fedfabric.network._layout import Layout
from fedfabric.network._process import (
    check_ports_free,
    runs_as,
    start,
    stop,
    wait_healthy,
    wait_listening,
)

OTHER_LOOPBACK = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to the loopback interface
NOT_HERE = "192.0.2.7"  # TEST-NET-1: never an address of this machine
NODE = "peer0.energy.smartcity.example"


def test_a_busy_port_is_found_on_the_nodes_own_address() -> None:
    with socket.socket() as s:
        s.bind((OTHER_LOOPBACK, 0))
        s.listen()
        port = s.getsockname()[1]

        with pytest.raises(PortInUseError) as info:
            check_ports_free([(NODE, "port", OTHER_LOOPBACK, port)])

    assert (info.value.node, info.value.purpose, info.value.port) == (NODE, "port", port)


def test_an_address_of_another_machine_is_named() -> None:
    with pytest.raises(NetworkError) as info:
        check_ports_free([(NODE, "operations_port", NOT_HERE, 9452)])

    assert not isinstance(info.value, PortInUseError)
    assert str(info.value).startswith(f"{NODE}: its address {NOT_HERE} is not an address of this")


async def test_health_and_listen_waits_reach_the_node_on_its_own_address() -> None:
    requests: list[bytes] = []

    async def operations(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n{}")
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # wait_listening connects and hangs up
        writer.close()

    server = await asyncio.start_server(operations, OTHER_LOOPBACK, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]

        await wait_healthy(NODE, OTHER_LOOPBACK, port, timeout=5)
        await wait_listening(NODE, OTHER_LOOPBACK, port, timeout=5)

    assert requests[0].startswith(b"GET /healthz HTTP/1.0\r\n")
    assert f"Host: {OTHER_LOOPBACK}:{port}\r\n".encode() in requests[0]


async def test_a_node_runs_as_its_command_line_through_any_name_of_its_program(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path / "state")
    (tmp_path / "bin").mkdir()
    program = tmp_path / "bin" / "sleep3"
    program.symlink_to(shutil.which("sleep") or "/bin/sleep")
    (tmp_path / "bin" / "sleep").symlink_to(program.name)  # another name, same folder
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "sleep3").symlink_to(program)  # the same file in another folder
    start(layout, "server", [str(program), "30"], os.environ)
    try:
        for _ in range(100):  # until it is past exec()
            if runs_as(layout, "server", [str(program), "30"]):
                break
            await asyncio.sleep(0.05)
        assert runs_as(layout, "server", [str(program), "30"])
        assert runs_as(layout, "server", [str(tmp_path / "bin" / "sleep"), "30"])
        assert not runs_as(layout, "server", [str(program), "31"])
        assert not runs_as(layout, "server", [str(elsewhere / "sleep3"), "30"])
    finally:
        await stop(layout, "server")
    assert not runs_as(layout, "server", [str(program), "30"])
