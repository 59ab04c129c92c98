"""RunConfig: defaults, YAML, and errors that name the field before anything starts."""

from __future__ import annotations

import dataclasses

import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.attacks import malicious_count
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.run import config_from_args
from fedfabric.network.cli import parser


def test_the_defaults_are_the_main_jobs_run_two_of_nine_gaussian_attackers_validated():
    config = RunConfig()

    assert (config.dataset, config.orgs, config.workers_per_org, config.rounds) == (
        "digits",
        3,
        3,
        10,
    )
    assert (config.num_workers, config.alpha, config.strategy) == (9, 0.5, "centered-clip")
    assert config.weighting == "org"  # safe against one malicious organisation of three
    assert config.attack == "gaussian" and malicious_count(9, config.malicious) == 2
    assert (config.validation_threshold, config.validation_fraction) == (1.0, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rounds = 3


@pytest.mark.parametrize("attack", ["none", None])
def test_attack_none_is_a_clean_run_without_malicious_workers(attack):
    config = RunConfig(attack=attack)

    assert (config.attack, config.malicious, config.make_attack()) == (None, 0.0, None)
    assert config == RunConfig().replace(attack=attack)
    assert RunConfig.from_dict(config.to_dict()) == config


def test_attack_none_in_yaml_and_on_the_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("attack: none\nrounds: 3\n")
    args = parser().parse_args(["run", "--attack", "none"])

    from_yaml = RunConfig.from_yaml(path)
    from_cli = config_from_args(args)

    assert (from_yaml.attack, from_yaml.malicious, from_yaml.rounds) == (None, 0.0, 3)
    assert (from_cli.attack, from_cli.malicious) == (None, 0.0)
    assert from_cli.validation_threshold == 1.0  # validation stays on in a clean run


def test_weighting_and_a_malicious_org_on_the_command_line():
    args = parser().parse_args(
        ["run", "--weighting", "samples", "--attack", "adaptive", "--malicious-org", "2"]
    )

    config = config_from_args(args)

    assert (config.weighting, config.attack, config.malicious_org) == ("samples", "adaptive", 2)
    assert config.malicious == 0.0  # the org replaces the default fraction


def test_a_yaml_file_sets_every_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "rounds: 3\nalpha: 0.5\nstrategy: multi-krum\nstrategy_params: {f: 2, m: 4}\n"
        "weighting: samples\n"
        "attack: sign_flip\nmalicious: 0.3\nquantization: int8\ncompression: zlib\n"
        "model: {arch: cnn, input: [1, 8, 8], channels: [4], classes: 10}\n"
    )

    config = RunConfig.from_yaml(path)

    assert (config.rounds, config.alpha, config.quantization) == (3, 0.5, "int8")
    assert config.make_strategy().aggregation() == {
        "rule": "multi-krum",
        "params": {"f": 2, "m": 4},
    }
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"strategy": "fedmean"}, "strategy", "unknown strategy 'fedmean'; valid names:"),
        ({"malicious": 1.5, "attack": "sign_flip"}, "malicious", "must be in [0, 1], got 1.5"),
        ({"attack": "none", "malicious": 0.3}, "malicious", "is 0.3 but attack is none"),
        ({"validation_fraction": 0}, "validation_fraction", "must be a number in (0, 1), got 0"),
        ({"validation_threshold": -1}, "validation_threshold", "must be null or a number >= 0"),
        ({"attack": "poison"}, "attack", "unknown attack 'poison'"),
        ({"dataset": "/no/such/data.npz"}, "dataset", "file '/no/such/data.npz' does not exist"),
        ({"dataset": "mnist"}, "dataset", "neither breast_cancer nor digits"),
        ({"rounds": 0}, "rounds", "must be an integer >= 1, got 0"),
        ({"lr": "fast"}, "lr", "must be a number > 0"),
        ({"alpha": 0}, "alpha", "must be a number > 0"),
        ({"quantization": "int4"}, "quantization", "must be one of ['float32', 'fp16', 'int8']"),
        ({"compression": "gzip"}, "compression", "must be one of ['none', 'zlib']"),
        ({"model": {"arch": "mlp"}}, "model", "lacks ['sizes']"),
        (
            {"strategy": "krum", "strategy_params": {"f": 4}, "weighting": "samples"},
            "strategy",
            "needs at least 11 workers per round but the run has 9",
        ),
        (
            {"strategy": "krum", "strategy_params": {"f": 1}},
            "strategy",
            "needs at least 5 organisations per round but the run has 3 (weighting 'org')",
        ),
        ({"weighting": "votes"}, "weighting", "must be one of ['org', 'samples', 'equal']"),
        ({"min_updates": 10}, "min_updates", "exceeds the 9 workers"),
        ({"malicious_org": 4, "attack": "gaussian"}, "malicious_org", "org number 1..3"),
        ({"malicious_org": 1, "attack": "none"}, "malicious_org", "needs an attack"),
        ({"norm_bound": 1e9}, "norm_bound", "must be <= 32768"),
    ],
)
def test_bad_settings_name_the_field(settings, field, message):
    with pytest.raises(ConfigError) as caught:
        RunConfig(**settings)

    assert caught.value.field == field
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"config field '{field}': ")


def test_unknown_keys_are_refused_listing_the_known_ones(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("round: 3\n")

    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(path)

    assert caught.value.field == "round"
    assert "known: alpha, async_order, attack" in str(caught.value)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")


def test_the_task_json_is_a_valid_task_for_the_contract():
    config = RunConfig(
        strategy="trimmed-mean", strategy_params={"beta": 0.2}, validation_threshold=0.05
    )
    layout = fl.model_layout({"arch": "mlp", "sizes": [64, 32, 10]})

    spec = fl.TaskSpec.from_json(config.task_json("digits", layout, ["Org1MSP", "Org2MSP"]))

    assert (spec.rule, dict(spec.rule_params)) == ("trimmed-mean", {"beta": 0.2})
    assert spec.rounds == 10 and spec.validation_threshold == 0.05
    assert spec.max_update_bytes > 4 * layout.size
