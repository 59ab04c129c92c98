"""Where a network's generated state lives (one state directory, never inside the repository)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_state_root() -> Path:
    """``$XDG_DATA_HOME/fedfabric`` (``~/.local/share/fedfabric``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fedfabric"


@dataclass(frozen=True)
class Layout:
    """Paths inside one network's state directory."""

    root: Path

    @property
    def crypto_dir(self) -> Path:
        return self.root / "crypto"

    @property
    def configtx_dir(self) -> Path:
        return self.root / "configtx"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def chaincode_dir(self) -> Path:
        return self.root / "chaincode"

    @property
    def ccaas_builder_dir(self) -> Path:
        return self.root / "ccaas_builder"

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def bundles_dir(self) -> Path:
        """Organisations' public bundles (`fedfabric org init` writes its own here)."""
        return self.root / "bundles"

    def bundle_file(self, msp_id: str) -> Path:
        return self.bundles_dir / f"{msp_id}.json"

    def channel_block(self, channel: str) -> Path:
        return self.configtx_dir / f"{channel}.block"

    def node_dir(self, host: str) -> Path:
        return self.root / "nodes" / host

    def ccaas_dir(self, host: str) -> Path:
        """A peer's connection.json per chaincode label, read by the external builder."""
        return self.node_dir(host) / "ccaas"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"
