"""The in-memory run: deterministic, learns, matches the contract's aggregation, and shows
a robust strategy holding up against sign-flip attackers where FedAvg does not."""

from __future__ import annotations

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.baseline import local_update, poison_updates, prepare, run_baseline
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.strategies import Strategy

SEED = 3
QUICK = {"rounds": 3, "seed": SEED, "epochs": 1, "batch_size": 32, "lr": 0.2}


@pytest.fixture(scope="module")
def clean():
    return run_baseline(RunConfig(**QUICK))


def test_three_rounds_of_fedavg_clearly_beat_the_initial_model(clean):
    accuracies = [r.accuracy for r in clean.rounds]

    assert clean.initial_accuracy < 0.2
    assert accuracies[-1] > 0.7 and accuracies[-1] > accuracies[0]
    assert all(r.aggregated and len(r.accepted) == 9 and not r.refused for r in clean.rounds)


def test_the_same_seed_gives_the_same_models(clean):
    again = run_baseline(RunConfig(**QUICK))

    assert again.final_model == clean.final_model
    assert [r.model_digest for r in again.rounds] == [r.model_digest for r in clean.rounds]


def test_a_round_is_exactly_what_the_contract_would_commit():
    config = RunConfig(**{**QUICK, "rounds": 1}, quantization="int8", compression="zlib",
                       strategy="median")
    fed = prepare(config)
    deltas = {i: local_update(fed, fed.initial_model, round_no=1, worker=i,
                              fit=fed.strategy.fit_config(1))[:2] for i in range(9)}
    submissions = []
    for i, (delta, samples) in deltas.items():
        blob = fl.encode_update(delta, fed.layout, quantization="int8", compression="zlib")
        record = {"digest": fl.read_header(blob)["content_digest"], "num_samples": samples,
                  "worker": fed.worker_name(i)}
        submissions.append((record, blob))
    spec = fl.TaskSpec.from_json(config.task_json("digits", fed.layout, ["Org1MSP"]))

    model, _ = fl.aggregate_round(spec, fl.encode_model(fed.initial_model, fed.layout),
                                  submissions)

    assert run_baseline(config).final_model == model


def test_with_30_percent_sign_flippers_multi_krum_stays_well_above_fedavg(clean):
    attacked = {**QUICK, "attack": "sign_flip", "malicious": 0.3}

    fedavg = run_baseline(RunConfig(**attacked))
    robust = run_baseline(RunConfig(**attacked, strategy="multi-krum",
                                    strategy_params={"f": 3, "m": 5}))

    assert len(fedavg.malicious) == 3
    assert robust.final_accuracy > fedavg.final_accuracy + 0.2
    assert robust.final_accuracy > clean.final_accuracy - 0.15
    assert set(robust.rounds[-1].excluded) >= set(robust.malicious)


def test_nan_attackers_are_refused_and_the_round_goes_on():
    result = run_baseline(RunConfig(**{**QUICK, "rounds": 1}, attack="nan", malicious=0.2))

    refused = dict(result.rounds[0].refused)
    assert set(refused) == set(result.malicious) and len(refused) == 2
    assert all(reason.startswith("non-finite:") for reason in refused.values())
    assert len(result.rounds[0].accepted) == 7


def test_updates_over_the_norm_bound_are_refused_like_the_contract_does():
    result = run_baseline(RunConfig(**{**QUICK, "rounds": 1}, attack="scaling",
                                    attack_params={"factor": 1000.0}, malicious=0.2,
                                    norm_bound=50.0))

    refused = dict(result.rounds[0].refused)
    assert set(refused) == set(result.malicious)
    assert all(reason.startswith("norm: L2 norm") for reason in refused.values())


def test_alie_attackers_sending_identical_content_are_refused_as_replays():
    result = run_baseline(RunConfig(**{**QUICK, "rounds": 1}, attack="alie", malicious=0.3))

    reasons = sorted(reason.split(":")[0] for _, reason in result.rounds[0].refused)
    assert reasons == ["replay", "replay"]


def test_label_flipping_poisons_the_data_of_the_malicious_workers_only():
    fed = prepare(RunConfig(**QUICK, attack="label_flip", malicious=0.2))
    honest = next(i for i in range(9) if i not in fed.malicious)
    bad = next(iter(fed.malicious))
    fit = fed.strategy.fit_config(1)
    clean_fed = prepare(RunConfig(**QUICK))

    def delta(f, i):
        return local_update(f, f.initial_model, round_no=1, worker=i, fit=fit)[0]["fc1.bias"]

    assert np.array_equal(delta(fed, honest), delta(clean_fed, honest))
    assert not np.array_equal(delta(fed, bad), delta(clean_fed, bad))
    assert poison_updates(fed, {0: {"b": np.ones(1)}}, round_no=1)[0]["b"] == 1.0


def test_a_users_strategy_runs_in_the_baseline(clean):
    class FirstOnly(fl.Strategy):
        name = "first-only"

        def combine(self, deltas, weights):
            return fl.Combination(deltas[0], (0,))

    result = run_baseline(RunConfig(**QUICK), strategy=Strategy(FirstOnly()))

    assert all(r.used == ("org1-worker1",) for r in result.rounds)
    assert result.final_accuracy > result.initial_accuracy + 0.3
    assert result.final_model != clean.final_model


def test_a_model_that_does_not_fit_the_data_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        prepare(RunConfig(model={"arch": "mlp", "sizes": [30, 8, 2]}))

    assert caught.value.field == "model" and "takes 30 features" in str(caught.value)
