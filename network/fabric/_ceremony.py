"""The consortium ceremony's steps that need Fabric's tools: each step is what one party runs
with what it has, and public bundles are all that crosses between organisations.

- `write_own_bundle`: an organisation makes its keys (`generate_org`) and exports its public
  bundle; its private keys stay in its own state directory.
- `import_received`: an organisation takes in the bundles other organisations sent.
- `make_genesis`: the founding party writes the channel's genesis block from the
  organisations' bundles alone (configtxgen over MSP folders made from the bundles).

The single-machine network (`FabricNetwork.up`) runs the same steps for every organisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedfabric.network import _process
from fedfabric.network._binaries import FabricRelease
from fedfabric.network._bundle import (
    OrgBundle,
    export_bundle,
    read_bundle,
    write_bundle,
    write_msp,
)
from fedfabric.network._config import consortium_bundles, write_configtx
from fedfabric.network._crypto import generate_org, msp_roots_dir, org_dir
from fedfabric.network._layout import Layout
from fedfabric.network._topology import Topology


def write_own_bundle(topology: Topology, org: str, layout: Layout) -> Path:
    """Make (or complete) organisation `org`'s material in `layout`'s crypto folder and write
    its public bundle to `Layout.bundle_file`; return the bundle's path."""
    made = generate_org(topology, org, layout.crypto_dir)
    bundle = export_bundle(topology, made.msp_id, layout.crypto_dir)
    return write_bundle(bundle, layout.bundle_file(made.msp_id))


def import_received(topology: Topology, layout: Layout, own: Sequence[str]) -> list[Path]:
    """Every bundle in `Layout.bundles_dir` (this host's own, and those other organisations
    sent), each checked (`read_bundle`); each other organisation's public MSP is written
    where its own material would be (`org_dir`), so Fabric's tools find its certificates,
    and a peer organisation's CA certificate goes to `msp_roots_dir`. `own`: the MSP ids
    whose keys are here, never overwritten. Returns the bundle files."""
    files = sorted(layout.bundles_dir.glob("*.json"))
    for path in files:
        bundle = read_bundle(path)
        if bundle.msp_id in own:
            continue
        org = topology.any_org(bundle.msp_id)
        write_msp(bundle, org_dir(layout.crypto_dir, org) / "msp")
        if bundle.kind == "peer":
            root = msp_roots_dir(layout.crypto_dir) / f"{bundle.msp_id}.pem"
            root.parent.mkdir(parents=True, exist_ok=True)
            root.write_text(bundle.ca_cert)
    return files


async def make_genesis(
    release: FabricRelease,
    topology: Topology,
    layout: Layout,
    bundle_files: Sequence[Path],
    env: dict[str, str],
) -> Path:
    """Write the genesis block of `topology`'s channel from the bundles in `bundle_files`
    (each read and checked: `read_bundle`, `consortium_bundles`) to `Layout.channel_block`;
    return its path. Raises `BundleError` for a bad or missing bundle, `NetworkError` when
    configtxgen fails."""
    bundles: list[OrgBundle] = [read_bundle(path) for path in bundle_files]
    folder = write_configtx(topology, layout, consortium_bundles(topology, bundles))
    block = layout.channel_block(topology.channel)
    block.parent.mkdir(parents=True, exist_ok=True)
    await _process.run_tool(
        [
            release.tool("configtxgen"),
            "-configPath",
            str(folder),
            "-profile",
            "Channel",
            "-channelID",
            topology.channel,
            "-outputBlock",
            str(block),
        ],
        env,
        what="configtxgen",
    )
    return block
