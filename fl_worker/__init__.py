"""fedfabric.fl_worker: federated learning over the ledger, and the ``fedfabric`` command.

Modules (imported on use; `ml` and everything that trains pulls in torch):

- `config`: `RunConfig`, every setting of a run, checked before anything starts.
- `ml`: data sets, partitions, local training and evaluation (no Fabric, no asyncio).
- `strategies`, `attacks`: the chaincode's aggregation rules plus client-side options
  (FedProx, clipping), and attackers.
- `federation`: what a run derives from its settings, and how each worker or device trains.
- `ledger`: the FL contract's calls, through `fedfabric.gateway` or in memory (`MemoryFL`).
- `worker`, `coordinator`: the round loop, once: workers submit, the coordinator advances.
- `inmemory`: the same round loop over the in-memory contract (the run without the ledger).
- `clients`: the connections and identities a run uses (org workers, simulated devices).
- `devices`: devices sign their updates; their organisation's gateway submits them in
  batches (``SubmitBatch``).
- `audit`: recompute every round from the ledger.
- `run`, `report`: the ``fedfabric run`` job and its report folder.
"""
