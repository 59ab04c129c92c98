"""FL benchmark: what the ledger costs a federated run, and what robust rules buy.

1. ``ratio_round_time``: mean round wall time of `fedfabric run` on real Fabric (digits, MLP,
   3 orgs × 3 workers, FedAvg) ÷ the same run in memory without the ledger (same seed, same
   training, same fixed-point aggregation); ``round_s_ledger`` / ``round_s_memory`` raw;
   ``ledger_overhead_ms_p50``: the median ledger round − the memory round, in ms;
   ``round_ms_<part>``: where a ledger round's time goes (`round_breakdown`);
   ``ratio_round_time_cnn`` the same for a small CNN trained 5 local epochs.
2. ``ratio_ledger_bytes``: update bytes on the ledger with int8 + zlib ÷ the same updates as raw
   float32; ``accuracy_loss_quantized``: final accuracy float32 − int8+zlib, in points.
3. ``round_s_10`` / ``round_s_100`` / ``round_s_1000`` / ``round_s_10000``: wall time of one
   round (the second, steady state) in device mode with 3, 33, 333 and 3 333 devices per org
   (9, 99, 999 and 9 999 devices, each its own identity issued by its org's CA), each org's
   devices submitted in device batches by its gateway (`device_rounds`);
   ``ratio_round_s_10000_1000`` their ratio (target: at most 10). Where a device's time goes
   (one 333-entry batch on a quiet 2-CPU VM, CPU seconds: each endorsing org's chaincode
   server 0.73 and peer 0.8, the third peer 0.3, the orderers 0.5): mostly the chaincode
   protocol's round trips, one per key read or written (6 per device: its update record,
   bytes, worker record and fingerprint, plus two reads), about 0.27 ms of CPU each at each
   of the two endorsers; this Fabric has no batched reads or writes for chaincode.
4. Robustness with org-private validation on, as on the ledger (the in-memory run with one
   `FLContract` per organisation, each validating on its own split, endorsed like the gateway),
   at the settings of the Flower figures in docs/anchors: digits, MLP 64-32-10, 9 workers in
   3 orgs, Dirichlet(0.5) labels, 20 rounds of 1 local epoch, seeds 0-2. Per rule (`RULES`):
   ``acc_clean_<rule>``; ``acc_worst_2of9_<rule>`` / ``acc_worst_4of9_<rule>``, the worst
   over `ATTACKS` with 2 or 4 of 9 workers malicious; ``acc_worst_sybil_<rule>``, the worst
   over `ATTACKS` when the third organisation is malicious with every identity it may
   register; each a mean over the seeds (-1 when refusals left a round below the rule's
   minimum). ``acc_<rule>_<scenario>_<attack>`` are the cells. ``acc_without_org3_<rule>``:
   the third organisation sends only updates every peer refuses (NaN), so its data is
   missing: the best the Sybil scenario can reach, since a malicious org trains nothing useful.
   ``acc_without_2of9_<rule>`` / ``acc_without_4of9_<rule>``: the same for the 2 or 4
   malicious workers, the best any defence can reach in those scenarios.
   ``fedavg-plain`` is FedAvg per update without validation (Flower's).
   ``refusals_by_org_<msp>``: updates each org refused over the table.
   ``acc_check_ledger_vs_memory`` re-runs the default run's cell
   (centered-clip, 2 of 9 Gaussian, seed 0) on the ledger, with each org's own chaincode
   server validating: 1.0 when both give the same final accuracy.
5. Asynchronous rounds (``mode: async``, FedBuff, free arrival order, buffer of 5 of the 9
   workers): ``ratio_updates_per_s_async``, updates aggregated per second (steady state,
   from the second version on) by the CNN run on the ledger ÷ the same run in memory
   (``updates_per_s_async_ledger`` / ``_memory`` raw); ``acc_async_vs_sync``, the final
   accuracy of asynchronous runs ÷ synchronous ones at the same number of aggregated updates
   (digits, MLP, Dirichlet(0.5), FedAvg, 10 rounds of 9 updates against 18 versions of 5,
   in memory, mean over `SEEDS`; ``acc_async`` / ``acc_sync`` raw).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import RoundIncompleteError
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.run import RunOptions, run_job
from fedfabric.network import FabricNetwork, parse_topology
from tests.conftest import release, topology_data

PORT_SHIFT = int(os.environ.get("FEDFABRIC_BENCH_PORT_SHIFT", "45000"))
CNN = {"arch": "cnn", "input": [1, 8, 8], "channels": [8, 16], "classes": 10}
# These figures are measured as before the main job's defaults became an attacked, validated,
# non-IID run: IID data, every worker honest unless a cell says otherwise, no org validation.
PLAIN = {
    "alpha": None,
    "attack": None,
    "validation_threshold": None,
    "strategy": "fedavg",
    "weighting": "samples",
}
# The robustness table: rule -> settings (org weighting where three organisations are enough
# rows for the rule, per update otherwise).
RULES = {
    "centered-clip": {"strategy": "centered-clip"},
    "fedavg": {"strategy": "fedavg"},
    "median": {"strategy": "median"},
    "trimmed-mean": {
        "strategy": "trimmed-mean",
        "strategy_params": {"beta": 0.2},
        "weighting": "samples",
    },
    "krum": {"strategy": "krum", "strategy_params": {"f": 1}, "weighting": "samples"},
    "multi-krum": {
        "strategy": "multi-krum",
        "strategy_params": {"f": 1, "m": 5},
        "weighting": "samples",
    },
    "fedavg-plain": {"strategy": "fedavg", "weighting": "samples", "validation_threshold": None},
}
ATTACKS = ("sign_flip", "scaling", "gaussian", "label_flip", "alie", "ipm", "adaptive")
SCENARIOS = {
    "2of9": {"malicious": 2 / 9},
    "4of9": {"malicious": 4 / 9},
    "sybil": {"malicious_org": 3},
}
SEEDS = (0, 1, 2)
ANCHOR = {"rounds": 20, "epochs": 1, "alpha": 0.5}


def config(**settings) -> RunConfig:
    return RunConfig(**{**PLAIN, **settings})


def _quiet(_: str) -> None:
    pass


def robust_config(rule: str, seed: int, attack: str = "none", **scenario) -> RunConfig:
    settings = {**ANCHOR, **RULES[rule], "seed": seed, "attack": attack, **scenario}
    if attack == "scaling":
        settings["attack_params"] = {"factor": 10.0}
    return RunConfig(**settings)


def _cell(job: tuple[str, int, str, str]) -> tuple[tuple[str, int, str, str], float, dict]:
    """One run of the table (in a worker process): final accuracy and refusals per org."""
    import torch

    torch.set_num_threads(1)
    rule, seed, scenario, attack = job
    config = robust_config(rule, seed, attack, **SCENARIOS.get(scenario, {}))
    refusals: dict[str, int] = {}
    try:
        result = asyncio.run(run_in_memory(config))
    except RoundIncompleteError:  # refusals left a round below the rule's minimum
        return job, -1.0, refusals
    for outcome in result.rounds:
        for _, _, found in outcome.refused:
            for org in found.orgs:
                refusals[org] = refusals.get(org, 0) + 1
    return job, result.final_accuracy, refusals


def robustness_table(processes: int = 2) -> dict[str, float]:
    jobs = [
        (rule, seed, scenario, attack)
        for rule in RULES
        for seed in SEEDS
        for scenario, attack in [("clean", "none")]
        + [(s, a) for s in SCENARIOS for a in ("nan", *ATTACKS)]
    ]
    accuracy: dict[tuple[str, str, str], list[float]] = {}
    refusals: dict[str, int] = {}
    sys.path.insert(0, str(Path(__file__).parent))  # spawned workers import this module
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done, (job, acc, refused) in enumerate(pool.map(_cell, jobs), 1):
            rule, _, scenario, attack = job
            accuracy.setdefault((rule, scenario, attack), []).append(acc)
            if RULES[rule].get("validation_threshold", 1) is not None:
                for org, count in refused.items():
                    refusals[org] = refusals.get(org, 0) + count
            if done % 20 == 0:
                print(f"[bench fl] robustness table: {done}/{len(jobs)} runs", flush=True)
    results: dict[str, float] = {}
    for (rule, scenario, attack), accs in accuracy.items():
        mean = -1.0 if -1.0 in accs else sum(accs) / len(accs)
        key = f"acc_{rule}_clean" if scenario == "clean" else f"acc_{rule}_{scenario}_{attack}"
        results[key] = round(mean, 4)
    for rule in RULES:
        results[f"acc_clean_{rule}"] = results[f"acc_{rule}_clean"]
        results[f"acc_without_org3_{rule}"] = results.pop(f"acc_{rule}_sybil_nan")
        for scenario in ("2of9", "4of9"):
            results[f"acc_without_{scenario}_{rule}"] = results.pop(f"acc_{rule}_{scenario}_nan")
        for scenario in SCENARIOS:
            cells = [results[f"acc_{rule}_{scenario}_{a}"] for a in ATTACKS]
            results[f"acc_worst_{scenario}_{rule}"] = min(cells)
    for org, count in sorted(refusals.items()):
        results[f"refusals_by_org_{org}"] = count
    return results


def _metric_means(urls: list[str], names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """(sum, count) of each Prometheus histogram in `names`, added over the nodes at `urls`
    (their operations endpoints) and over label sets."""
    totals = {name: [0.0, 0.0] for name in names}
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            metric, _, value = line.partition(" ")
            base = metric.split("{", 1)[0]
            for name in names:
                if base in (f"{name}_sum", f"{name}_count"):
                    totals[name][base.endswith("_count")] += float(value)
    return {name: (total, count) for name, (total, count) in totals.items()}


class NodeClock:
    """Per-block means, in seconds, of what Fabric's own nodes measure (their Prometheus
    metrics) between `start` and `stop`: ``commit`` (a peer validating and committing a
    block, ``gossip_state_commit_duration``) and ``fill`` (an orderer waiting for a block
    to fill, ``blockcutter_block_fill_duration``)."""

    NAMES = {"commit": "gossip_state_commit_duration", "fill": "blockcutter_block_fill_duration"}

    def __init__(self, net: FabricNetwork) -> None:
        topology = net.topology
        nodes = [*topology.peers, *topology.orderer_org.orderers]
        self.urls = [f"http://{n.address_at(n.operations_port)}/metrics" for n in nodes]
        self._start: dict[str, tuple[float, float]] = {}

    def start(self) -> None:
        self._start = _metric_means(self.urls, tuple(self.NAMES.values()))

    def stop(self) -> dict[str, float]:
        now = _metric_means(self.urls, tuple(self.NAMES.values()))
        means = {}
        for key, name in self.NAMES.items():
            total = now[name][0] - self._start[name][0]
            count = now[name][1] - self._start[name][1]
            means[key] = total / count if count else 0.0
        return means


def round_breakdown(outcomes: list, nodes: dict[str, float]) -> dict[str, float]:
    """Where a ledger round's wall time goes, in ms (means over `outcomes`), on its critical
    path: the workers train and submit, the round closes, AdvanceRound commits, the new model
    is read and scored. ``round_ms_endorse`` / ``round_ms_order`` are one update's (the
    mean; the last one submitted delays the round by that much) plus AdvanceRound's;
    ``order`` runs from Submit until the gateway peer reports the commit, less
    ``round_ms_commit``: a peer validating and committing those two blocks (`NodeClock`);
    ``round_ms_fill`` is the part of ``order`` the orderer waited for the blocks to fill
    (the batch timeout, when a block is cut by it). ``round_ms_event`` is the wait for the
    round's commit events and for every organisation's peer to hold its blocks;
    ``round_ms_read`` the round's state and the new model read from the ledger;
    ``round_ms_train`` the rest of the train-and-submit phase: local training, whose end
    the submissions of earlier workers overlap."""

    def mean(values: list[float]) -> float:
        return statistics.mean(values) if values else 0.0

    steps = [w.steps for o in outcomes for w in o.workers if w.steps]
    endorse, order = (mean([s[k] for s in steps]) for k in ("endorse", "order"))

    def phase(key: str) -> float:
        return mean([o.timings.get(key, 0.0) for o in outcomes])

    commit = 2 * nodes["commit"]  # the last update's block and AdvanceRound's
    parts = {
        "train": phase("train_submit") - endorse - order,
        "endorse": endorse + phase("aggregate_endorse"),
        "order": order + phase("aggregate_order") - commit,
        "commit": commit,
        "event": phase("events") + phase("sync") + phase("aggregate_sync"),
        "read": phase("read") + phase("model"),
        "evaluate": phase("evaluate"),
    }
    parts["other"] = phase("total") - sum(parts.values())
    parts["fill"] = 2 * nodes["fill"]
    return {f"round_ms_{k}": round(1000 * v, 1) for k, v in parts.items()}


async def ledger_measures(net: FabricNetwork, folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}

    async def job(name: str, config: RunConfig, on_round=None, **options) -> object:
        return await run_job(
            config,
            RunOptions(
                task=f"bench-{name}-{int(time.time())}", report_dir=folder / name, **options
            ),
            net,
            say=_quiet,
            on_round=on_round,
        )

    outcomes: list = []
    clock = NodeClock(net)

    def steady(outcome) -> None:  # round 1 carries the start-up; measure from round 2
        outcomes.append(outcome)
        if len(outcomes) == 1:
            clock.start()

    plain = await job("plain", config(rounds=8), on_round=steady)
    nodes = clock.stop()
    ledger_round = sum(r.seconds for r in plain.rounds[1:]) / (len(plain.rounds) - 1)
    memory_round = plain.baseline_seconds / len(plain.rounds)
    overhead = statistics.median(r.seconds for r in plain.rounds[1:]) - memory_round
    out.update(
        round_s_ledger=round(ledger_round, 3),
        round_s_memory=round(memory_round, 3),
        ratio_round_time=round(ledger_round / memory_round, 2),
        ledger_overhead_ms_p50=round(1000 * overhead, 1),
        **round_breakdown(outcomes[1:], nodes),
    )
    cnn = await job("cnn", config(rounds=3, epochs=5, model=CNN))
    cnn_round = sum(r.seconds for r in cnn.rounds[1:]) / (len(cnn.rounds) - 1)
    cnn_memory = cnn.baseline_seconds / len(cnn.rounds)
    out.update(
        round_s_ledger_cnn=round(cnn_round, 3),
        round_s_memory_cnn=round(cnn_memory, 3),
        ratio_round_time_cnn=round(cnn_round / cnn_memory, 2),
    )
    f32 = await job("f32", config(rounds=10), baseline=False)
    q8 = await job(
        "int8", config(rounds=10, quantization="int8", compression="zlib"), baseline=False
    )
    out.update(
        ratio_ledger_bytes=round(q8.ledger.ledger_update_bytes / q8.ledger.raw_update_bytes, 3),
        accuracy_loss_quantized=round(100 * (f32.rounds[-1].accuracy - q8.rounds[-1].accuracy), 2),
        acc_float32=round(f32.rounds[-1].accuracy, 4),
        acc_int8_zlib=round(q8.rounds[-1].accuracy, 4),
    )
    out.update(await device_rounds(net, folder))
    # The default run's cell of the robustness table, on the ledger: each org's own chaincode
    # server validates on its own split.
    attacked = robust_config("centered-clip", 0, "gaussian", malicious=2 / 9)
    on_ledger = await job("check", attacked, baseline=False)
    in_memory = await asyncio.to_thread(_cell, ("centered-clip", 0, "2of9", "gaussian"))
    out["acc_check_ledger_vs_memory"] = float(on_ledger.rounds[-1].accuracy == in_memory[1])
    out["acc_check_ledger"] = round(on_ledger.rounds[-1].accuracy, 4)
    return out


ASYNC = {"mode": "async", "async_order": "free", "buffer_size": 5}


async def async_measures(net: FabricNetwork, folder: Path) -> dict[str, float]:
    """Section 5 of the module docstring."""
    cnn = config(rounds=8, epochs=5, model=CNN, **ASYNC)
    report = await run_job(
        cnn,
        RunOptions(task=f"bench-async-{int(time.time())}", report_dir=folder / "async"),
        net,
        say=_quiet,
    )
    size = cnn.versions_buffer
    ledger = size * (len(report.rounds) - 1) / sum(r.seconds for r in report.rounds[1:])
    memory = size * len(report.rounds) / report.baseline_seconds
    accuracy: dict[str, list[float]] = {"sync": [], "async": []}
    for seed in SEEDS:
        sync = config(rounds=10, alpha=0.5, seed=seed)
        runs = {"sync": sync, "async": sync.replace(rounds=10 * 9 // 5, **ASYNC)}
        for mode, settings in runs.items():
            accuracy[mode].append((await run_in_memory(settings)).final_accuracy)
    acc_sync, acc_async = (sum(accuracy[m]) / len(SEEDS) for m in ("sync", "async"))
    return {
        "updates_per_s_async_ledger": round(ledger, 2),
        "updates_per_s_async_memory": round(memory, 2),
        "ratio_updates_per_s_async": round(ledger / memory, 2),
        "acc_sync": round(acc_sync, 4),
        "acc_async": round(acc_async, 4),
        "acc_async_vs_sync": round(acc_async / acc_sync, 3),
    }


DEVICE_FLEETS = ((10, 3), (100, 33), (1000, 333), (10000, 3333))


def fleet_dataset(folder: Path, copies: int = 10) -> Path:
    """Digits `copies` times over, each copy with its own small pixel noise: enough samples
    (about 4 800 a org) for 3 333 devices per org, with digits' features and classes (so the
    same 64-32-10 MLP)."""
    from sklearn import datasets

    digits = datasets.load_digits()
    rng = np.random.default_rng(0)
    x = np.concatenate([digits.data + rng.normal(0, 0.5, digits.data.shape) for _ in range(copies)])
    path = folder / "fleet-digits.npz"
    np.savez(path, x=x.astype(np.float32), y=np.tile(digits.target, copies))
    return path


async def device_rounds(
    net: FabricNetwork, folder: Path, fleets: tuple[tuple[int, int], ...] = DEVICE_FLEETS
) -> dict[str, float]:
    """``round_s_<devices>``: the second (steady-state) round of a device run, FedAvg per
    update; each org's devices in batches (``SubmitBatch``) from its gateway, every device
    signing with its own identity issued by its org's CA. Fleets above 1 000 devices train on
    `fleet_dataset` (digits has too few samples for 3 333 devices an org).
    ``ratio_round_s_10000_1000``: how the round time grows with the fleet."""
    out: dict[str, float] = {}
    for total, per_org in fleets:
        settings = {"dataset": str(fleet_dataset(folder))} if total > 1000 else {}
        report = await run_job(
            config(rounds=2, epochs=1, **settings),
            RunOptions(
                task=f"bench-devices{total}-{int(time.time())}",
                report_dir=folder / f"devices{total}",
                baseline=False,
                devices_per_org=per_org,
            ),
            net,
            say=lambda line, n=total: print(f"[bench fl] devices {n}: {line}", flush=True),
        )
        out[f"round_s_{total}"] = round(report.rounds[-1].seconds, 2)
    if "round_s_10000" in out and "round_s_1000" in out:
        out["ratio_round_s_10000_1000"] = round(out["round_s_10000"] / out["round_s_1000"], 2)
    return out


async def measure(folder: Path) -> dict[str, float]:
    chaincodes = [
        {
            "name": "fl",
            "version": "1.0",
            "server": "python",
            "contract": "fedfabric.chaincode.fl:FLContract",
        }
    ]
    topology = parse_topology(topology_data(PORT_SHIFT, chaincodes=chaincodes))
    net = FabricNetwork(topology, folder / "state", release())
    try:
        await net.up()
        return {**await ledger_measures(net, folder), **await async_measures(net, folder)}
    finally:
        await net.clean()


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-fl-") as tmp:
        results = asyncio.run(measure(Path(tmp)))
    t = time.perf_counter()
    results.update(robustness_table())
    results["robustness_table_s"] = round(time.perf_counter() - t, 1)
    return results
