"""Where the pinned Fabric release (binaries and its own config files) is installed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedfabric.network._errors import FabricNotInstalledError

FABRIC_VERSION = "3.1.5"
FABRIC_COMMIT = "86c1172bec37e6590c6b1ae6f847833df48d65fc"
TOOLS = ("peer", "orderer", "osnadmin", "configtxgen")


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
