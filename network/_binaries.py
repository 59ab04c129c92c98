"""Which Fabric runs: the pinned build that scripts/install-fabric makes, or a release you bring.

The pinned Fabric is the newest one the Go module proxy serves: Fabric's main branch at commit
695dd57e (2023-04-05), on the way to 3.0 (`peer version` says 3.0.0-snapshot). It is built into
the user's cache. A folder named by ``FEDFABRIC_FABRIC_HOME`` (an unpacked official release such
as 3.1.5, with ``bin/`` and ``config/``) is used as it is: fedfabric never builds into it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedfabric.network._errors import FabricNotInstalledError

PINNED_FABRIC = "Fabric 3.0 development snapshot 695dd57e (2023-04-05)"
PINNED_COMMIT = "695dd57e"
TOOLS = ("peer", "orderer", "osnadmin", "configtxgen")
CONFIGS = ("core.yaml", "orderer.yaml")
INSTALLER = Path(__file__).parent / "fabric" / "install-fabric.sh"


def default_fabric_home() -> Path:
    """Where scripts/install-fabric builds the pinned Fabric:
    ``$XDG_CACHE_HOME/fedfabric/fabric-3.0-snapshot-695dd57e``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedfabric" / f"fabric-3.0-snapshot-{PINNED_COMMIT}"


def fabric_release(home: str | os.PathLike[str] | None = None) -> FabricRelease:
    """The release folder ``home`` names (``FEDFABRIC_FABRIC_HOME``, used as it is), or with
    none the pinned build in `default_fabric_home`, which `install_fabric` may fill."""
    if home:
        return FabricRelease(Path(home), supplied=True)
    return FabricRelease(default_fabric_home())


@dataclass(frozen=True)
class FabricRelease:
    """A Fabric release folder laid out like the official tarball: ``bin/`` and ``config/``.

    ``supplied`` is true for a folder the user named: it is checked and used, never built into.
    """

    home: Path
    supplied: bool = False

    def tool(self, name: str) -> str:
        return str(self.home / "bin" / name)

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    def missing(self) -> list[str]:
        """The binaries and config files this folder lacks."""
        lacking = [self.tool(t) for t in TOOLS if not os.access(self.tool(t), os.X_OK)]
        return lacking + [
            str(self.config_dir / f) for f in CONFIGS if not (self.config_dir / f).exists()
        ]

    def check(self) -> FabricRelease:
        """Raise `FabricNotInstalledError` unless every binary and config file is present."""
        lacking = self.missing()
        if not lacking:
            return self
        if self.supplied:
            raise FabricNotInstalledError(
                f"FEDFABRIC_FABRIC_HOME={self.home} is not a Fabric release folder (missing: "
                f"{', '.join(lacking)}); point it at a folder with bin/ and config/, or unset it "
                f"to use the pinned {PINNED_FABRIC}"
            )
        raise FabricNotInstalledError(
            f"{PINNED_FABRIC} is not installed in {self.home} (missing: {', '.join(lacking)}); "
            "run scripts/install-fabric, or set FEDFABRIC_FABRIC_HOME to a Fabric release "
            "folder with bin/ and config/"
        )

    def version(self) -> str:
        """What the release's ``peer version`` reports, e.g. ``3.1.5 (commit 86c1172b)``."""
        self.check()
        out = subprocess.run(
            [self.tool("peer"), "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        version = re.search(r"^\s*Version:\s*(\S+)", out, re.M)
        commit = re.search(r"^\s*Commit SHA:\s*(\S+)", out, re.M)
        if not version:
            raise FabricNotInstalledError(
                f"{self.tool('peer')} version printed no version: {out.strip()[:200]!r}"
            )
        return f"{version[1]} (commit {commit[1] if commit else 'unknown'})"

    def describe(self) -> str:
        """One line for people: which Fabric this is and where it lives."""
        version = self.version()
        if not self.supplied and PINNED_COMMIT in version:
            return f"{PINNED_FABRIC}, in {self.home}"
        return f"Fabric {version}, from {self.home}"


async def install_fabric(
    release: FabricRelease, progress: Callable[[str], None] = print
) -> FabricRelease:
    """Make ``release`` usable: build the pinned Fabric into it (``go install``; about a minute
    the first time, instant when present), reporting each step. A folder the user supplied is
    only checked. Raise `FabricNotInstalledError` if that fails."""
    if release.supplied:
        return release.check()
    env = {k: v for k, v in os.environ.items() if k != "FEDFABRIC_FABRIC_HOME"}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(INSTALLER),
        str(release.home),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        progress(line)
    if await proc.wait() != 0:
        reason = next(
            (x for x in reversed(lines) if "error" in x.lower()),
            lines[-1] if lines else "no output",
        )
        raise FabricNotInstalledError(
            f"installing {PINNED_FABRIC} into {release.home} failed: {reason}"
        )
    return release.check()
