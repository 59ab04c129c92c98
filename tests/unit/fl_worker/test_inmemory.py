"""The in-memory run (the coordinator and workers over `MemoryFL`): deterministic, learns, the
contract's refusals, and a robust rule holding up against sign-flip attackers where FedAvg
does not."""

from __future__ import annotations

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.chaincode.fl import _aggregation
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.federation import local_update, poison_updates, prepare
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.run import baseline_config
from fedfabric.fl_worker.strategies import Strategy
from fedfabric.fl_worker.worker import COMMITTED

SEED = 3
# The contract's own checks, without org-private validation, on IID data; rules over single
# updates (Multi-Krum with f = 3 needs 9 rows: nine workers, three orgs).
QUICK = {"rounds": 3, "seed": SEED, "epochs": 1, "batch_size": 32, "lr": 0.2, "alpha": None}
QUICK.update(attack=None, validation_threshold=None, strategy="fedavg", weighting="samples")


def quick(**changes) -> RunConfig:
    return RunConfig(**{**QUICK, **changes})


@pytest.fixture(scope="module")
async def clean():
    return await run_in_memory(RunConfig(**QUICK))


def refused(outcome) -> dict[str, str]:
    return {name: r.check for name, _, r in outcome.refused}


async def test_three_rounds_of_fedavg_clearly_beat_the_initial_model(clean):
    accuracies = [r.accuracy for r in clean.rounds]

    assert clean.initial_accuracy < 0.2
    assert accuracies[-1] > 0.7 and accuracies[-1] > accuracies[0]
    for r in clean.rounds:
        assert [w.status for w in r.workers] == [COMMITTED] * 9 and len(r.updates) == 9


async def test_the_same_seed_gives_the_same_models(clean):
    again = await run_in_memory(RunConfig(**QUICK))

    assert again.final_model == clean.final_model
    assert [r.model_digest for r in again.rounds] == [r.model_digest for r in clean.rounds]


async def test_with_30_percent_sign_flippers_multi_krum_stays_well_above_fedavg(clean):
    attacked = {"attack": "sign_flip", "malicious": 0.3}

    fedavg = await run_in_memory(quick(**attacked))
    robust = await run_in_memory(
        quick(**{**attacked, "strategy": "multi-krum", "strategy_params": {"f": 3, "m": 5}})
    )

    assert len(fedavg.malicious) == 3
    assert robust.final_accuracy > fedavg.final_accuracy + 0.2
    assert robust.final_accuracy > clean.final_accuracy - 0.15
    assert {name for name, _ in robust.rounds[-1].excluded} >= set(robust.malicious)


async def test_nan_attackers_are_refused_and_the_round_goes_on():
    result = await run_in_memory(quick(rounds=1, attack="nan", malicious=0.2))

    assert refused(result.rounds[0]) == dict.fromkeys(result.malicious, "non-finite")
    assert len(result.rounds[0].updates) == 7


async def test_updates_over_the_norm_bound_are_refused_by_the_contract():
    result = await run_in_memory(
        quick(
            rounds=1,
            attack="scaling",
            attack_params={"factor": 1000.0},
            malicious=0.2,
            norm_bound=50.0,
        )
    )

    assert refused(result.rounds[0]) == dict.fromkeys(result.malicious, "norm")
    assert all("exceeds the bound 50.0" in r.message for _, _, r in result.rounds[0].refused)


async def test_alie_attackers_sending_identical_content_are_refused_as_copies():
    result = await run_in_memory(quick(rounds=1, attack="alie", malicious=0.3))

    # Three attackers send the same update: the first keeps it, the others copied it.
    assert sorted(refused(result.rounds[0]).values()) == ["copy", "copy"]


def test_label_flipping_poisons_the_data_of_the_malicious_workers_only():
    fed = prepare(quick(attack="label_flip", malicious=0.2))
    honest = next(i for i in range(9) if i not in fed.malicious)
    bad = next(iter(fed.malicious))
    fit = fed.strategy.fit_config(1)
    clean_fed = prepare(RunConfig(**QUICK))

    def delta(f, i):
        return local_update(f, f.initial_model, round_no=1, worker=i, fit=fit)[0]["fc1.bias"]

    assert np.array_equal(delta(fed, honest), delta(clean_fed, honest))
    assert not np.array_equal(delta(fed, bad), delta(clean_fed, bad))
    assert poison_updates(fed, {0: {"b": np.ones(1)}}, round_no=1)[0]["b"] == 1.0


async def test_a_users_registered_rule_runs_in_the_contract(clean, monkeypatch):
    monkeypatch.setattr(_aggregation.RULES, "_classes", dict(_aggregation.RULES._classes))

    @fl.register_rule
    class FirstOnly(fl.Rule):
        name = "first-only"

        def combine(self, deltas, weights):
            return fl.Combination(deltas[0], (0,))

    result = await run_in_memory(RunConfig(**QUICK), strategy=Strategy(FirstOnly()))

    assert all(len(r.used) == 1 for r in result.rounds)
    assert result.final_accuracy > result.initial_accuracy + 0.3
    assert result.final_model != clean.final_model


def test_a_model_that_does_not_fit_the_data_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        prepare(RunConfig(model={"arch": "mlp", "sizes": [30, 8, 2]}))

    assert caught.value.field == "model" and "takes 30 features" in str(caught.value)


async def test_the_default_run_validated_in_memory_refuses_each_attacker_by_its_own_org():
    config = RunConfig(rounds=3)  # the main job: 2 of 9 Gaussian attackers, validation on

    validated = await run_in_memory(config)
    unvalidated = await run_in_memory(baseline_config(config))  # the report's comparison

    assert len(validated.malicious) == 2
    for outcome in validated.rounds:
        assert sorted(name for name, _, _ in outcome.refused) == sorted(validated.malicious)
        for _, org, found in outcome.refused:
            # Its own org refuses it; the org endorsing alongside may refuse it too.
            assert found.check == "private-validation" and org in found.orgs
            assert f"{org} refuses the update of {org}:" in found.message
        assert len(outcome.updates) == 7
    assert all(not outcome.refused for outcome in unvalidated.rounds)
    assert validated.final_accuracy > unvalidated.final_accuracy + 0.1


def test_a_malicious_org_means_every_worker_of_that_org():
    fed = prepare(quick(attack="gaussian", malicious_org=2))

    assert fed.malicious == frozenset({3, 4, 5})


async def test_a_malicious_org_endorses_its_own_attackers_and_the_others_still_refuse():
    config = RunConfig(rounds=1, attack="gaussian", malicious_org=3)

    result = await run_in_memory(config)

    # Org3's own server validates nothing; Org1 and Org2 refuse every Gaussian update.
    refusals = result.rounds[0].refused
    assert len(refusals) == 3
    assert all(set(found.orgs) == {"Org1MSP", "Org2MSP"} for _, _, found in refusals)
