"""``python -m fedfabric.network``: the ``fedfabric`` command."""

from fedfabric.network.cli import run_main

run_main()
