"""Long-running node processes (pid files, logs, health) and one-shot Fabric CLI calls."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fedfabric.network._errors import NetworkError, PortInUseError
from fedfabric.network._layout import Layout
from fedfabric.network._topology import url_host

# Children started by this process, kept so they are reaped (no zombies, no ResourceWarning)
# while this process lives; nodes outlive it by design (`fedfabric network up` returns).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    """Collect the exit status of every child that has ended (a killed node included)."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


class Processes:
    """The nodes of one state directory run as native processes (the default backend; a
    `fedfabric.network._containers.Containers` runs the same command lines in containers).
    A node is known by its name: its host name, or its chaincode server's name."""

    kind = "native"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        start(self.layout, name, argv, env, cwd)

    def running(self, name: str) -> bool:
        return pid_of(self.layout, name) is not None

    def runs_as(self, name: str, argv: Sequence[str]) -> bool:
        return runs_as(self.layout, name, argv)

    async def stop(self, name: str) -> bool:
        """Stop it (gracefully, then SIGKILL); True if it was running."""
        return await stop(self.layout, name)

    def kill(self, name: str) -> None:
        kill(self.layout, name)

    def started(self) -> list[str]:
        """Every node started from this state directory (running or not)."""
        return [p.stem for p in self.layout.run_dir.glob("*.pid")]


def fabric_env(**extra: str) -> dict[str, str]:
    """This process's environment for a Fabric tool or node: no inherited ``CORE_*``,
    ``ORDERER_*`` or ``FABRIC_CFG_PATH`` (a node's settings come from its own files), info
    logging, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE_", "ORDERER_"))}
    env.pop("FABRIC_CFG_PATH", None)
    env["FABRIC_LOGGING_SPEC"] = "info"
    env.update(extra)
    return env


def start(
    layout: Layout, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
) -> int:
    """Start ``argv`` detached, output appended to the node's log; record its pid."""
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.log_file(name), "ab") as log:
        log.write(f"\n--- fedfabric: starting {name} at {time.ctime()} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    layout.pid_file(name).write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc.pid


def runs_as(layout: Layout, name: str, argv: Sequence[str]) -> bool:
    """Whether node `name` runs (`pid_of`) with command line `argv`: the same arguments, and
    a program that is the same file in the same folder (``.venv/bin/python`` and
    ``.venv/bin/python3`` are one interpreter of one environment)."""
    pid = pid_of(layout, name)
    if pid is None:
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    running = [os.fsdecode(a) for a in raw.split(b"\0")[:-1]]
    if not running or running[1:] != list(argv[1:]):
        return False
    was, now = Path(running[0]), Path(argv[0])
    return was.parent == now.parent and was.resolve() == now.resolve()


def pid_of(layout: Layout, name: str) -> int | None:
    """The pid of a node this network started and that is still alive, else None."""
    try:
        pid_text, exe = layout.pid_file(name).read_text().split("\n")[:2]
        pid = int(pid_text)
        _reap()
        if pid in _children and _children[pid].poll() is not None:
            return None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # exited, not yet reaped by its parent
        return None
    # An empty command line is a process still in exec(); a different one is a recycled pid.
    return pid if cmdline == [b""] or os.fsencode(exe) in cmdline else None


async def stop(layout: Layout, name: str, *, timeout: float = 10.0) -> bool:
    """SIGTERM the node (SIGKILL after ``timeout``); True if it was running."""
    pid = pid_of(layout, name)
    if pid is None:
        layout.pid_file(name).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_of(layout, name) is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if pid_of(layout, name) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while pid_of(layout, name) is not None:
            await asyncio.sleep(0.05)
    layout.pid_file(name).unlink(missing_ok=True)
    return True


def kill(layout: Layout, name: str) -> None:
    """kill -9 a node (for failure tests); its pid file stays so `up` can restart it."""
    pid = pid_of(layout, name)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_of(layout, name) is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # SIGKILL is immediate; this only waits for the exit to be seen


def check_ports_free(ports: Sequence[tuple[str, str, str, int]]) -> None:
    """Raise `PortInUseError` naming the first (node, purpose, host, port) already bound, or
    `NetworkError` when a node's host is no address of this machine."""
    for node, purpose, host, port in ports:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NetworkError(f"{node}: cannot resolve its address {host!r}: {exc}") from exc
        family, kind, _, _, sockaddr = found[0]
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go servers bind
            try:
                s.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise NetworkError(
                        f"{node}: its address {host} is not an address of this machine, so "
                        f"it cannot listen there ({purpose} {port}); change the address in the "
                        "topology file or run the node on that host"
                    ) from exc
                raise PortInUseError(node, purpose, port) from exc


async def wait_healthy(
    name: str,
    host: str,
    port: int,
    *,
    timeout: float = 60.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll the node's operations ``/healthz`` on ``host:port`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise NetworkError(f"{name} exited during start-up; see its log")
        try:
            status, body = await http_get(host, port, "/healthz")
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        await asyncio.sleep(0.1)
    raise NetworkError(f"{name} not healthy after {timeout:.0f}s ({last})")


async def wait_listening(
    name: str,
    host: str,
    port: int,
    *,
    timeout: float = 30.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise NetworkError(f"{name} exited during start-up; see its log")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise NetworkError(
        f"{name} does not accept connections on {url_host(host)}:{port} after {timeout:.0f}s"
    )


async def http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 GET on ``host:port`` (operations endpoints are plain HTTP)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {url_host(host)}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def run_tool(
    argv: Sequence[str], env: Mapping[str, str], *, what: str, timeout: float = 120.0
) -> str:
    """Run a Fabric CLI command; return its stdout or raise `NetworkError` saying ``what``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NetworkError(f"{what}: timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        text = (err + out).decode(errors="replace").strip().splitlines()
        errors = [line for line in text if "Error" in line or "error" in line] or text
        errors = [line.split(" - proposal response:")[0][:400] for line in errors]
        raise NetworkError(f"{what} failed: {' | '.join(errors[-3:])}")
    return out.decode(errors="replace")


def json_in(text: str, marker: str = "") -> dict:
    """The JSON object in a CLI's output (after ``marker`` if given)."""
    start = text.index(marker) + len(marker) if marker else 0
    return json.loads(text[text.index("{", start) : text.rindex("}") + 1])
