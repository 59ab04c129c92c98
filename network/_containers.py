"""The container backend: a state directory's nodes as podman containers, from the images
`fedfabric images build` makes here (`fedfabric.network._images`).

`Containers` runs exactly the command lines the native backend runs (`Processes`), each in
its image: the ``peer`` and ``orderer`` binaries in the peer and orderer images, a Python
chaincode server (``python -m fedfabric.chaincode serve ...``) in the chaincode image. Every
container uses the host's network (the topology's addresses, ports and TLS names stay as
they are) and mounts the state directory at its own path, so the nodes read the same
configuration, keys and ledgers: a ledger outlives its container, across ``down`` and
``up``. A container's output goes to the node's log file (`Layout.log_file`). A contract
from outside fedfabric (``--contract mypackage.module:Class``) is mounted read-only from where
it is importable here (`contract_source`).

"The host's network" is the network namespace podman runs in: to give an organisation's
containers a namespace of their own, run its commands under ``nsenter --net=/run/netns/NAME``
(not ``ip netns exec``, which remounts ``/sys`` without the cgroup mounts runc needs).

Containers are named ``ff-<digest of the state directory>-<node>`` and labelled with the
state directory, so two networks on one host never meet.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedfabric.network._binaries import FabricRelease
from fedfabric.network._errors import NetworkError
from fedfabric.network._images import KINDS, default_tag, podman, podman_env
from fedfabric.network._layout import Layout

LABEL = "fedfabric.state"
ARGV_LABEL = "fedfabric.argv"
# What a node's environment may carry into its container (the rest is the host's own).
PASSED = ("FABRIC_", "CORE_", "ORDERER_", "CHAINCODE_", "FEDFABRIC_", "GRPC_")
IMAGE_SITE = "/opt/fedfabric"  # where the chaincode image holds fedfabric (Containerfile)
CONTRACTS = "/opt/contracts"  # where a contract from outside fedfabric is mounted


class Containers:
    """The nodes of one state directory as podman containers (see the module doc), of the
    images ``fedfabric images build`` tags for `release` and this fedfabric (`images`: kind
    → tag)."""

    kind = "containers"

    def __init__(self, layout: Layout, release: FabricRelease) -> None:
        self.layout = layout
        self.release = release
        digest = hashlib.sha256(str(layout.root.resolve()).encode()).hexdigest()[:8]
        self._prefix = f"ff-{digest}-"

    @functools.cached_property
    def images(self) -> dict[str, str]:
        """Kind → tag, named by content (hashing the binaries: only once, when needed)."""
        return {kind: default_tag(kind, self.release) for kind in KINDS}

    def service(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> dict[str, Any]:
        """Node `name` (command line `argv`, environment `env`) as a compose service: what
        `start` runs, and what ``fedfabric org compose`` writes."""
        image, command = self._image_of(name, argv)
        state = str(self.layout.root.resolve())
        volumes = [f"{state}:{state}"]
        environment = {k: v for k, v in sorted(env.items()) if k.startswith(PASSED)}
        if image == self.images["chaincode"] and (source := contract_source(command)):
            volumes.append(f"{source}:{CONTRACTS}/{source.name}:ro")
            environment["PYTHONPATH"] = f"{IMAGE_SITE}:{CONTRACTS}"
        service: dict[str, Any] = {
            "image": image,
            "container_name": self._prefix + name,
            "network_mode": "host",
            "user": "0:0",
            "labels": {LABEL: state, ARGV_LABEL: json.dumps(list(argv))},
            "volumes": volumes,
            "environment": environment,
            "command": command,
        }
        if cwd:
            service["working_dir"] = str(cwd)
        return service

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        service = self.service(name, argv, env, cwd)
        self._remove(name)
        log = self.layout.log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        podman(
            "run", "--detach", "--name", service["container_name"], "--network", "host",
            "--user", service["user"],
            *[a for k, v in service["labels"].items() for a in ("--label", f"{k}={v}")],
            *[a for v in service["volumes"] for a in ("--volume", v)],
            *[a for k, v in service["environment"].items() for a in ("--env", f"{k}={v}")],
            *(["--workdir", service["working_dir"]] if cwd else []),
            "--log-driver", "k8s-file", "--log-opt", f"path={log}",
            service["image"], *service["command"],
        )  # fmt: skip

    def running(self, name: str) -> bool:
        return self._inspect(name, "{{.State.Running}}") == "true"

    def runs_as(self, name: str, argv: Sequence[str]) -> bool:
        if not self.running(name):
            return False
        label = self._inspect(name, f'{{{{index .Config.Labels "{ARGV_LABEL}"}}}}')
        return label == json.dumps(list(argv))

    async def stop(self, name: str) -> bool:
        """Stop it (SIGTERM, SIGKILL after 10 s) and remove the container; True if it ran."""
        was = self.running(name)
        if was:
            podman("stop", "--time", "10", self._prefix + name)
        self._remove(name)
        return was

    def kill(self, name: str) -> None:
        """SIGKILL it, as a crash would (``podman kill``); `start` starts it again."""
        if self.running(name):
            podman("kill", "--signal", "KILL", self._prefix + name)

    def started(self) -> list[str]:
        state = str(self.layout.root.resolve())
        names = podman(
            "ps", "--all", "--filter", f"label={LABEL}={state}", "--format", "{{.Names}}"
        ).split()
        return [n.removeprefix(self._prefix) for n in names if n.startswith(self._prefix)]

    def _image_of(self, name: str, argv: Sequence[str]) -> tuple[str, list[str]]:
        program = Path(argv[0]).name
        if program in ("peer", "orderer"):
            return self.images[program], [program, *argv[1:]]
        if Path(argv[0]) == Path(sys.executable) and list(argv[1:3]) == [
            "-m",
            "fedfabric.chaincode",
        ]:
            return self.images["chaincode"], list(argv[3:])  # the image's entrypoint
        raise NetworkError(
            f"{name}: the container backend runs peers, orderers and Python chaincode "
            f"servers; not {' '.join(argv[:2])} (use the native backend for it)"
        )

    def _inspect(self, name: str, template: str) -> str | None:
        done = subprocess.run(
            ["podman", "container", "inspect", "--format", template, self._prefix + name],
            capture_output=True, text=True, env=podman_env(),
        )  # fmt: skip
        return done.stdout.strip() if done.returncode == 0 else None

    def _remove(self, name: str) -> None:
        """Remove its container, and those that depend on it (podman-compose makes a
        chaincode server's container depend on its peer's: ``depends_on``)."""
        subprocess.run(
            ["podman", "rm", "--force", "--ignore", "--depend", self._prefix + name],
            capture_output=True, env=podman_env(),
        )  # fmt: skip


def contract_source(args: Sequence[str]) -> Path | None:
    """The package (or module file) of a chaincode server's ``--contract`` (in its `args`)
    when the contract is not fedfabric's own: the container backend mounts it read-only into
    the chaincode image, which holds fedfabric and its dependencies only. Found as the
    native server finds it (``python -m`` from this folder, then this Python's path); raises
    `NetworkError` when it is nowhere here."""
    if "--contract" not in args:
        return None
    module = args[list(args).index("--contract") + 1].split(":")[0]
    top = module.split(".")[0]
    if top == "fedfabric":
        return None
    for entry in [os.getcwd(), *sys.path]:
        for candidate in (Path(entry or ".") / top, Path(entry or ".") / f"{top}.py"):
            if candidate.exists():
                return candidate.resolve()
    raise NetworkError(
        f"contract {module}: no package {top!r} here to mount into the chaincode image "
        "(run from the folder it is importable from, or install it)"
    )


def missing_images(images: Mapping[str, str]) -> list[str]:
    """The kinds whose image is not in podman's store."""
    return [
        kind
        for kind, tag in images.items()
        if subprocess.run(
            ["podman", "image", "exists", tag], capture_output=True, env=podman_env()
        ).returncode
        != 0
    ]


__all__ = ["Containers", "contract_source", "missing_images"]
