"""A SuperNode's own data (node config ``data-path``): loading, the run's label space, bad paths.

In process, with real Flower Contexts and Messages; tests/test_federated_deployment.py runs the
same through real SuperLink/SuperNode processes.
"""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from node_images import CLASSES, make_folder

from fedcl.errors import ConfigError, DataError
from fedcl.federated.config import FederatedConfig, from_run_config
from fedcl.federated.task import load_node_data

RUN = {"dataset": "imagefolder", "data.classes": ",".join(CLASSES), "strategies": "oneshot", "ipc": 2,
       "iterations": 2, "width": 16, "batch-real": 8}


def _cfg(**kw) -> FederatedConfig:
    return from_run_config({**RUN, **kw})


def test_a_node_folder_of_some_classes_is_read_in_the_runs_label_space(tmp_path) -> None:
    folder = make_folder(tmp_path / "node", ["square", "triangle"], per_class=3)  # no test/: a node needs none
    data = load_node_data(_cfg(), str(folder))
    assert data.num_classes == 3 and data.class_names == list(CLASSES)
    assert sorted(set(data.train_labels.tolist())) == [1, 2]  # square, triangle in the run's order
    assert data.image_shape == (1, 8, 8) and len(data.test_labels) == 0
    resized = load_node_data(_cfg(**{"data.image-size": 12}), str(folder))
    assert resized.image_shape == (1, 12, 12)


@pytest.mark.parametrize(("make", "run", "error", "match"), [
    (None, {}, DataError, "data-path=.*no such folder"),
    (lambda p: make_folder(p, ["circle", "hexagon"], per_class=2), {}, DataError, "hexagon are not in the run's"),
    (lambda p: make_folder(p, per_class=2), {"data.classes": ""}, ConfigError, "names no data.classes"),
    (lambda p: (p / "train").mkdir(parents=True), {}, DataError, "no class folders"),
])
def test_bad_node_data_is_one_clear_error(tmp_path, make, run, error, match) -> None:
    folder = tmp_path / "node"
    if make is not None:
        make(folder)
    with pytest.raises(error, match=match) as info:
        load_node_data(_cfg(**run), str(folder))
    assert len(str(info.value).splitlines()) == 1


def _message(monkeypatch) -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):  # a message is made inside a task
        monkeypatch.setattr(TaskIdentity, name, value)
    return Message(RecordDict({"config": ConfigRecord({"task": "summary", "strategy": "oneshot"})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)


def test_the_client_app_summarises_its_own_folder(tmp_path, monkeypatch) -> None:
    from fedcl.federated.client_app import train
    from fedcl.federated.validate import SummarySpec, default_max_bytes, validate_summary

    folder = make_folder(tmp_path / "node", ["circle", "triangle"], per_class=4)
    run = {k: str(v) for k, v in RUN.items()}
    context = Context(run_id=1, node_id=5, node_config={"data-path": str(folder)}, state=RecordDict(), run_config=run)
    reply = train(_message(monkeypatch), context)
    x, y = validate_summary(reply.content["summary"], "float32",
                            SummarySpec((1, 8, 8), 3, 6, default_max_bytes(6, (1, 8, 8))))
    assert sorted(y.tolist()) == [0, 0, 2, 2]  # two per class it holds, in the run's labels
    assert int(reply.content["metrics"]["num-examples"]) == 8
    # images of another size than the server's (no data.image_size): the server's check drops the summary
    other = make_folder(tmp_path / "big", ["circle"], per_class=2, size=10)
    context = Context(run_id=1, node_id=6, node_config={"data-path": str(other)}, state=RecordDict(), run_config=run)
    reply = train(_message(monkeypatch), context)
    from fedcl.errors import SummaryRejected

    with pytest.raises(SummaryRejected, match="shape"):
        validate_summary(reply.content["summary"], "float32", SummarySpec((1, 8, 8), 3, 6, 10**6))


def test_a_node_without_data_says_how_to_give_it_some(monkeypatch) -> None:
    from fedcl.federated.client_app import train

    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(),
                      run_config={k: str(v) for k, v in RUN.items()})
    with pytest.raises(ConfigError, match="data-path=DIR"):
        train(_message(monkeypatch), context)


def test_the_server_checks_its_own_folder_against_the_label_space(tmp_path) -> None:
    root = make_folder(tmp_path / "server", per_class=2, test=2)
    cfg = from_run_config({**RUN, "data.root": str(root)}, check_data=True)
    assert cfg.data.classes == list(CLASSES)
    with pytest.raises(ConfigError, match="differs from the classes of the server"):
        from_run_config({**RUN, "data.root": str(root), "data.classes": "circle,square"}, check_data=True)
    with pytest.raises(ConfigError, match="twice"):
        from_run_config({**RUN, "data.classes": "circle,circle"})


def test_channels_and_a_server_without_data(tmp_path) -> None:
    from fedcl.federated.task import server_data

    folder = make_folder(tmp_path / "node", ["circle"], per_class=2)
    assert load_node_data(_cfg(**{"data.channels": 3}), str(folder)).image_shape == (3, 8, 8)  # grey to RGB
    cfg = _cfg(**{"data.server-test": "false", "data.image-size": 8, "data.channels": 1})
    data = server_data(cfg)
    assert data.image_shape == (1, 8, 8) and data.num_classes == 3 and len(data.test_labels) == 0
    from_run_config({**RUN, "data.server-test": "false",
                    "data.image-size": 8, "data.channels": 1}, check_data=True)  # no data.root needed
    with pytest.raises(ConfigError, match="data.classes, data.image_size and data.channels"):
        _cfg(**{"data.server-test": "false"})
    with pytest.raises(ConfigError, match="data.channels must be"):
        _cfg(**{"data.channels": 2})


def test_colour_images_in_a_grey_run_are_refused(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    folder = tmp_path / "node" / "train" / "circle"
    folder.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8), "RGB").save(folder / "a.png")
    with pytest.raises(DataError, match="3 channels, the run's data.channels is 1"):
        load_node_data(_cfg(**{"data.channels": 1}), str(tmp_path / "node"))
