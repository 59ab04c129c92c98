"""The consortium ceremony's steps that need Fabric's tools: each step is what one party runs
with what it has, and public bundles are all that crosses between organisations.

- `write_own_bundle`: an organisation makes its keys (`generate_org`) and exports its public
  bundle; its private keys stay in its own state directory.
- `make_genesis`: the founding party writes the channel's genesis block from the
  organisations' bundles alone (configtxgen over MSP folders made from the bundles).

The single-machine network (`FabricNetwork.up`) runs the same steps for every organisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedfabric.network import _process
from fedfabric.network._binaries import FabricRelease
from fedfabric.network._bundle import OrgBundle, export_bundle, read_bundle, write_bundle
from fedfabric.network._config import consortium_bundles, write_configtx
from fedfabric.network._crypto import generate_org
from fedfabric.network._layout import Layout
from fedfabric.network._topology import Topology


def write_own_bundle(topology: Topology, org: str, layout: Layout) -> Path:
    """Make (or complete) organisation `org`'s material in `layout`'s crypto folder and write
    its public bundle to `Layout.bundle_file`; return the bundle's path."""
    made = generate_org(topology, org, layout.crypto_dir)
    bundle = export_bundle(topology, made.msp_id, layout.crypto_dir)
    return write_bundle(bundle, layout.bundle_file(made.msp_id))


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
