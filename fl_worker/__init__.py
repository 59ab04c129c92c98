"""fedfabric.fl_worker: federated learning over the ledger, and the ``fedfabric`` command.

Modules (imported on use; `task` and everything that trains pulls in torch):

- `config`: `RunConfig`, every setting of a run, checked before anything starts.
- `task`: data sets, partitions, local training and evaluation (no Fabric, no asyncio).
- `strategies`, `attacks`: aggregation rules (the chaincode's own, plus FedProx) and attackers.
- `baseline`: the same run in memory, without the ledger.
- `ledger`: the FL contract's calls through `fedfabric.gateway`.
- `worker`, `coordinator`, `devices`: the run on the ledger; resume from the ledger.
- `audit`: recompute every round from the ledger.
- `run`, `report`: the ``fedfabric run`` job and its report folder.
"""
