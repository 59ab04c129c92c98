"""Where the pinned Fabric release (binaries and its own config files) is installed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedfabric.network._errors import FabricNotInstalledError

FABRIC_VERSION = "3.1.5"
FABRIC_COMMIT = "86c1172bec37e6590c6b1ae6f847833df48d65fc"
TOOLS = ("peer", "orderer", "osnadmin", "configtxgen")
INSTALLER = Path(__file__).parent / "fabric" / "install-fabric.sh"


def default_fabric_home() -> Path:
    """``$XDG_CACHE_HOME/fedfabric/fabric-3.1.5`` (what scripts/install-fabric fills)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedfabric" / f"fabric-{FABRIC_VERSION}"


@dataclass(frozen=True)
class FabricRelease:
    """A Fabric release folder laid out like the official tarball: ``bin/`` and ``config/``."""

    home: Path

    def tool(self, name: str) -> str:
        return str(self.home / "bin" / name)

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    def check(self) -> FabricRelease:
        """Raise `FabricNotInstalledError` unless every binary and config file is present."""
        missing = [str(self.home / "bin" / t) for t in TOOLS
                   if not os.access(self.home / "bin" / t, os.X_OK)]
        missing += [str(self.config_dir / f) for f in ("core.yaml", "orderer.yaml")
                    if not (self.config_dir / f).exists()]
        if missing:
            raise FabricNotInstalledError(
                f"Hyperledger Fabric {FABRIC_VERSION} is not installed in {self.home} (missing: "
                f"{', '.join(missing)}); run scripts/install-fabric, or set "
                "FEDFABRIC_FABRIC_HOME to a Fabric release folder with bin/ and config/")
        return self


async def install_fabric(home: Path, progress: Callable[[str], None] = print) -> FabricRelease:
    """Build and install the pinned Fabric release into ``home`` (go install; minutes the
    first time, instant when present), reporting each step; raise if it fails."""
    proc = await asyncio.create_subprocess_exec(
        "bash", str(INSTALLER), env={**os.environ, "FEDFABRIC_FABRIC_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        progress(line)
    if await proc.wait() != 0:
        reason = next((x for x in reversed(lines) if "error" in x.lower()), lines[-1] if lines
                      else "no output")
        raise FabricNotInstalledError(f"installing Hyperledger Fabric {FABRIC_VERSION} into "
                                      f"{home} failed: {reason}")
    return FabricRelease(home).check()
