"""One definition of the federated settings: FederatedConfig, the run config, [tool.flwr.app.config].

Values that reach the ServerApp or the ClientApp through ``flwr run --run-config`` /
``context.run_config`` go through the command line's validation: types (``"false"`` is False,
``"abc"`` no int), unknown keys, names and ranges, each refused with one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedcl.cli import main as cli_main
from fedcl.config import load_config
from fedcl.errors import ConfigError
from fedcl.federated.config import LOCAL_KEYS, FederatedConfig, FederatedPrivacy, from_run_config, to_run_config

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_is_the_config_in_kebab_case_with_its_defaults() -> None:
    from flwr.common.config import flatten_dict

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    flat = flatten_dict(table)  # as Flower reads it: nested tables give dotted keys
    expected = to_run_config(FederatedConfig())
    assert sorted(flat) == sorted(expected)
    for key, value in expected.items():
        assert flat[key] == value and type(flat[key]) is type(value), key
    assert "fault" not in flat and not set(LOCAL_KEYS) & set(flat)  # no test hook, no command-line-only key
    assert from_run_config(flat) == FederatedConfig()


def test_a_command_line_config_survives_the_run_config() -> None:
    cfg = load_config(FederatedConfig, ["strategies=[oneshot,feddm]", "privacy.center=false", "data.root=/x y",
                                        "privacy.epsilon=2", "privacy.budget=4", "lr=0.5", "out=somewhere"])
    back = from_run_config(to_run_config(cfg))
    assert back.strategies == ["oneshot", "feddm"] and not back.privacy.center and back.data.root == "/x y"
    assert back.privacy == FederatedPrivacy(epsilon=2.0, budget=4.0, center=False) and back.lr == 0.5
    assert back.out is None  # command-line only: not in a run config


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("False", False), ("true", True), (False, False),
                                                 ("no", False)])
def test_a_bool_given_as_text_is_read_as_the_bool_it_says(value, expected) -> None:
    assert from_run_config({"soft-labels": value}).soft_labels is expected
    assert from_run_config({"privacy.center": value}).privacy.center is expected


def test_numbers_are_converted_only_where_nothing_is_lost() -> None:
    cfg = from_run_config({"lr": 1, "ipc": "7", "round-timeout": "90", "strategies": "feddm, oneshot"})
    assert (cfg.lr, cfg.ipc, cfg.round_timeout, cfg.strategies) == (1.0, 7, 90.0, ["feddm", "oneshot"])
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize(("run_config", "message"), [
    ({"ipc": "abc"}, "invalid run-config value 'ipc'"),
    ({"num-clients": 2.5}, "invalid run-config value 'num-clients'"),
    ({"soft-labels": "maybe"}, "invalid run-config value 'soft-labels'"),
    ({"privacy.max-grad-norm": "x"}, "invalid run-config value 'privacy.max-grad-norm'"),
    ({"ipcs": 3}, "unknown run-config key 'ipcs'"),
    ({"fault": "nan"}, "unknown run-config key 'fault'"),
    ({"out": "/tmp/x"}, "unknown run-config key 'out'"),  # the command line's, not the app's
    ({"privacy.noise-multiplier": 1.0}, "unknown run-config key 'privacy.noise-multiplier'"),
    ({"ipc": 0}, "ipc must be at least 1"),
    ({"server-noise": -1.0}, "server_noise must be >= 0"),
    ({"strategies": "oneshot,fedprox"}, "unknown strategy 'fedprox'"),
    ({"strategies": ""}, "strategies is empty"),
    ({"codec": "int4"}, "unknown codec 'int4'"),
    ({"privacy.epsilon": 1.0, "privacy.budget": 0.5}, "privacy.budget must be > 0 and >= privacy.epsilon"),
    ({"privacy.epsilon": 1.0, "privacy.accountant": "gdp"}, "gdp cannot compose"),
    ({"privacy.epsilon": 1.0, "strategies": "oneshot,fedavg"}, "drop 'fedavg'"),
    ({"param": "pixels"}, "unknown param 'pixels'"),
    ({"param-kwargs": "{factor: 2}"}, "'param-kwargs': not a JSON object"),
    ({"param-kwargs": "[2]"}, "'param-kwargs': a JSON object"),
    ({"method": "herding", "param": "haba"}, "selects real images"),
    ({"soft-labels": "true", "privacy.epsilon": 1.0, "strategies": "oneshot"}, "soft_labels under DP"),
    ({"data.eval-split": "val"}, "eval.split=val needs a validation split"),
    ({"data.eval-split": "train"}, "eval.split"),
    ({"data.val-fraction": 1.0}, r"data.val_fraction must be in \[0, 1\)"),
])
def test_bad_run_config_values_are_refused_in_one_line(run_config, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_run_config(run_config)
    assert len(str(info.value).splitlines()) == 1


def test_memory_options_travel_as_a_json_object_and_are_checked_against_the_data() -> None:
    cfg = load_config(FederatedConfig, ["param=idc", "param_kwargs.factor=2", "soft_labels=true"])
    rc = to_run_config(cfg)
    assert (rc["param"], rc["param-kwargs"], rc["soft-labels"]) == ("idc", '{"factor": 2}', True)
    assert from_run_config(rc, check_data=True).param_kwargs == {"factor": 2}
    with pytest.raises(ConfigError, match="factor=3 must be a positive integer that divides the image size 8x8"):
        from_run_config({**rc, "param-kwargs": '{"factor": 3}'}, check_data=True)  # digits are 8x8


def test_a_deployment_may_run_on_cuda_without_simulation_resources() -> None:
    # client_resources are the simulation's; a deployed node brings its own GPU
    assert from_run_config({"device": "cuda"}).device == "cuda"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize(("run_config", "message"), [
    ({"server-epochs": "many"}, "invalid run-config value 'server-epochs'"),
    ({"dataset": "nope"}, "unknown dataset 'nope'"),
    ({"rounds": 0}, "rounds must be at least 1"),
])
def test_a_bad_run_config_ends_the_server_app_with_one_line(run_config, message, tmp_path) -> None:
    from fedcl.federated.server_app import app

    result = tmp_path / "result.json"
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={**to_run_config(FederatedConfig()), **run_config, "result-file": str(result)})
    handler = _Lines()
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    try:
        app(None, context)  # it stops before it touches the grid
    finally:
        logger.removeHandler(handler)
    errors = [line for line in handler.lines if "fedcl: error:" in line]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    payload = json.loads(result.read_text())
    assert payload["error"]["type"] in ("ConfigError", "DataError") and message in payload["error"]["message"]


def test_a_client_refuses_a_bad_run_config_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    from fedcl.federated.client_app import train

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):  # a message is made inside a task
        monkeypatch.setattr(TaskIdentity, name, value)
    msg = Message(RecordDict({"config": ConfigRecord({"task": "summary", "strategy": "oneshot"})}),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2}, state=RecordDict(),
                      run_config={"ipc": "abc"})
    with pytest.raises(ConfigError, match="'ipc'"):
        train(msg, context)


@pytest.mark.parametrize(("args", "message"), [
    (["ipc=abc"], "ipc"),
    (["soft_labels=maybe"], "soft_labels"),
    (["privacy.sample_rate=0.1"], "sample_rate"),  # federated DP samples at batch_real / class size
    (["client_resources.num_cpus=0.5"], "num_cpus"),  # a whole number in Flower's federation config
])
def test_the_command_line_refuses_the_same_values_with_exit_2(args, message, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert cli_main(["federated", *args, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedcl: error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()



def test_a_validation_split_is_held_out_of_every_partition_and_the_server_evaluates_on_it() -> None:
    """``data.val_fraction`` carves the split before partitioning (no client holds it); the server's
    evaluation set is the test set, or with ``data.eval_split=val`` that split (to choose settings)."""
    import torch

    from fedcl.federated.task import load_data, load_partition, server_data

    base = {"dataset": "digits", "num-clients": 3, "partition": "iid"}
    plain = from_run_config(base)
    held = from_run_config({**base, "data.val-fraction": 0.2})
    chosen = from_run_config({**base, "data.val-fraction": 0.2, "data.eval-split": "val"})
    full = load_data("digits")
    split = load_data("digits", val_fraction=0.2)
    assert split.val_images is not None and len(split.val_labels) == round(0.2 * len(full.train_labels))

    def rows(images: torch.Tensor) -> set[bytes]:
        return {x.numpy().tobytes() for x in images}

    val = rows(split.val_images)
    parts = [load_partition(held, pid, 3)[0] for pid in range(3)]
    assert sum(len(p) for p in parts) == len(split.train_labels) == len(full.train_labels) - len(val)
    assert not any(rows(p) & val for p in parts)
    assert sum(len(load_partition(plain, pid, 3)[0]) for pid in range(3)) == len(full.train_labels)
    assert torch.equal(server_data(held).test_images, full.test_images)
    assert torch.equal(server_data(chosen).test_images, split.val_images)
