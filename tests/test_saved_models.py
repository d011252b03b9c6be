"""Saved models (fedcl.models.saved): safetensors + a JSON header that rebuilds the network; `fedcl evaluate`
tests a saved model; continual and federated run folders hold their final models. Bad input: one line, exit 2,
nothing written."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fedcl.cli import main
from fedcl.data import load_dataset
from fedcl.errors import ConfigError, DataError
from fedcl.models import create_model, list_models, load_model, save_model
from fedcl.models.saved import FORMAT, artifact_paths, data_meta, evaluate_model, load_memory_state
from fedcl.train import predict, train_model

TINY_KWARGS = {"convnet": {"width": 8}, "mlp": {"width": 8}, "lenet": {}, "resnet18": {"width": 4}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A small MLP trained on digits for a few epochs, saved; ``(path, model)``."""
    torch.manual_seed(0)
    model = create_model("mlp", digits.image_shape, digits.num_classes, width=16)
    train_model(model, digits.train_images, digits.train_labels, epochs=30, lr=0.05, batch_size=32)
    path = save_model(tmp_path_factory.mktemp("m") / "model.safetensors", model, name="mlp", kwargs={"width": 16},
                      in_shape=digits.image_shape, num_classes=digits.num_classes,
                      meta={**data_meta(digits), "strategy": "test"})
    return path, model.eval()


def _save(path, name="mlp", kwargs=None, in_shape=(1, 8, 8), num_classes=10, model=None):
    kwargs = {"width": 8} if kwargs is None and name == "mlp" else kwargs or {}
    model = model or create_model(name, in_shape, num_classes, **kwargs)
    return save_model(path, model, name=name, kwargs=kwargs, in_shape=in_shape, num_classes=num_classes,
                      meta={"dataset": "digits", "mean": [0.3] * in_shape[0], "std": [0.4] * in_shape[0]})


def _rewrite(path, dest, *, header=None, tensors=None):
    """A copy of a saved model with its header entries or tensors changed (as a foreign writer would)."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(path))
    save_file(tensors(state) if tensors else state, str(dest), metadata={**meta, **(header or {})})
    return dest


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_round_trips(name, tmp_path) -> None:
    torch.manual_seed(0)
    kwargs = TINY_KWARGS.get(name, {})
    model = create_model(name, (1, 8, 8), 10, **kwargs).eval()
    rng = torch.get_rng_state()
    path = _save(tmp_path / "m.safetensors", name, kwargs, model=model)
    loaded, meta = load_model(path)
    assert torch.equal(torch.get_rng_state(), rng)  # saving and loading leave a run's random stream alone
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    assert (meta["format"], meta["model"], meta["model_kwargs"]) == (FORMAT, name, kwargs)
    assert (meta["in_shape"], meta["num_classes"], meta["dataset"]) == ([1, 8, 8], 10, "digits")
    assert meta["fedcl_version"] and meta["mean"] == [0.3] and meta["std"] == [0.4]
    with safe_open(str(path), framework="pt") as f:  # the header alone says how to rebuild it
        header = f.metadata()
    assert json.loads(header["model_kwargs"]) == kwargs and json.loads(header["in_shape"]) == [1, 8, 8]
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_save_refuses_a_header_that_would_not_rebuild_the_model(tmp_path) -> None:
    model = create_model("mlp", (1, 8, 8), 10, width=16)
    with pytest.raises(ConfigError, match=r"shapes .* \(the model was not built by"):
        save_model(tmp_path / "m.safetensors", model, name="mlp", kwargs={"width": 8}, in_shape=(1, 8, 8),
                   num_classes=10, meta={"dataset": "digits", "mean": [0.0], "std": [1.0]})
    with pytest.raises(ConfigError, match="meta must name mean, std"):
        save_model(tmp_path / "m.safetensors", model, name="mlp", kwargs={"width": 16}, in_shape=(1, 8, 8),
                   num_classes=10, meta={"dataset": "digits"})
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_bad_files_with_one_clear_line(tmp_path) -> None:
    good = _save(tmp_path / "good.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    cases = {
        "no such fedcl saved model": tmp_path / "missing.safetensors",
        "not a readable fedcl saved model": tmp_path / "garbage.safetensors",
        "names model 'nope', which is not registered; registered: convnet": _rewrite(
            good, tmp_path / "unknown.safetensors", header={"model": "nope"}),
        "cannot rebuild mlp from the header": _rewrite(good, tmp_path / "kwargs.safetensors",
                                                       header={"model_kwargs": '{"depth": 3}'}),
        r"shapes body.1.bias \(8,\) != \(16,\); body.1.weight \(8, 64\) != \(16, 64\)": _rewrite(
            good, tmp_path / "width.safetensors", header={"model_kwargs": '{"width": 16}'}),
        "missing classifier.bias; unexpected extra": _rewrite(
            good, tmp_path / "names.safetensors",
            tensors=lambda s: {**{k: v for k, v in s.items() if k != "classifier.bias"}, "extra": torch.ones(1)}),
        "non-finite values in classifier.bias": _rewrite(
            good, tmp_path / "nan.safetensors", tensors=lambda s: {**s, "classifier.bias": s["classifier.bias"] / 0}),
        "malformed saved-model header": _rewrite(good, tmp_path / "header.safetensors", header={"in_shape": "[1, 8]"}),
        r"format 'fedcl.model/9', expected fedcl.model/1\) \(a newer fedcl": _rewrite(
            good, tmp_path / "future.safetensors", header={"format": "fedcl.model/9"}),
    }
    for message, path in cases.items():
        with pytest.raises(DataError, match=message) as info:
            load_model(path)
        assert "\n" not in str(info.value)


def test_evaluate_tests_a_saved_model_on_its_dataset(trained, digits, tmp_path, capsys) -> None:
    path, model = trained
    expected = float((predict(model, digits.test_images) == digits.test_labels).float().mean())
    assert expected > 0.5  # a trained model, so a wrong normalisation or a lost tensor would show
    out = tmp_path / "eval"
    assert main(["evaluate", str(path), "device=cpu", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "saved mlp (test) trained on digits, tested on digits: test accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(expected) and f"{expected:.4f}" in printed
    assert metrics["images"] == len(digits.test_labels) == len(metrics["class_accuracy"]) * 45
    assert metrics["model_meta"]["model_kwargs"] == {"width": 16} and (out / "results.md").is_file()
    # eval.split=val tests on the validation split carved from the training data
    assert main(["evaluate", str(path), "eval.split=val", "data.val_fraction=0.2", "device=cpu"]) == 0
    assert "val accuracy" in capsys.readouterr().out


def test_evaluate_maps_another_normalisation_to_the_models(trained, digits) -> None:
    path, model = trained
    loaded, meta = load_model(path)
    # the same images under other statistics: the model must still see its own normalisation
    mean, std = (0.5,), (0.25,)
    pixels = digits.test_images * digits.std[0] + digits.mean[0]
    other = replace(digits, test_images=(pixels - mean[0]) / std[0], mean=mean, std=std)
    same = evaluate_model(loaded, meta, digits, device="cpu")
    assert evaluate_model(loaded, meta, other, device="cpu")["accuracy"] == pytest.approx(same["accuracy"], abs=1e-3)


def _bad_models(tmp_path, good):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    return [
        ([str(tmp_path / "missing.safetensors")], "no such file"),
        ([str(tmp_path / "corrupt.safetensors")], "not a readable fedcl synthetic set or saved model"),
        ([str(_rewrite(good, tmp_path / "u.safetensors", header={"model": "vgg99"}))], "model 'vgg99'"),
        ([str(_rewrite(good, tmp_path / "s.safetensors", header={"model_kwargs": '{"width": 4}'}))],
         "tensors do not match the rebuilt mlp"),
        ([str(_rewrite(good, tmp_path / "f.safetensors", header={"format": "someone.else/1"}))],
         "neither a fedcl synthetic set nor a saved model"),
        ([str(_save(tmp_path / "big.safetensors", in_shape=(1, 16, 16)))],
         r"takes images of shape \(1, 16, 16\), digits has \(1, 8, 8\); pass data.image_size=16"),
        ([str(_save(tmp_path / "rgb.safetensors", in_shape=(3, 8, 8)))], r"shape \(3, 8, 8\), digits has"),
        ([str(_save(tmp_path / "five.safetensors", num_classes=5))], "the model has 5 classes, digits has 10"),
        ([str(good), "dataset=nope"], "unknown dataset 'nope'"),
    ]


def test_evaluate_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys) -> None:
    for args, message in _bad_models(tmp_path, trained[0]):
        out = tmp_path / "out"
        assert main(["evaluate", *args, "device=cpu", f"out={out}"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("fedcl: error:") and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), (message, err)
        assert not out.exists()  # nothing half-written


def test_the_recorded_image_size_is_the_default(tmp_path, capsys) -> None:
    """A model trained at data.image_size=16 (as a continual run records it) is tested at that size."""
    model = create_model("mlp", (1, 16, 16), 10, width=8)
    path = save_model(tmp_path / "m.safetensors", model, name="mlp", kwargs={"width": 8}, in_shape=(1, 16, 16),
                      num_classes=10, meta={"dataset": "digits", "mean": [0.3], "std": [0.4], "image_size": 16})
    assert main(["evaluate", str(path), "device=cpu"]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_artifact_paths_name_one_run_or_several(tmp_path) -> None:
    assert artifact_paths(tmp_path, "fedavg", ["fedavg"], "model") == [tmp_path / "model.safetensors"]
    assert artifact_paths(tmp_path, "fedavg", ["oneshot", "fedavg"], "model") == [
        tmp_path / "models" / "fedavg.safetensors"]
    assert artifact_paths(tmp_path, "distilled", ["distilled"], "learner", "memory", seed=1, seeds=[0, 1]) == [
        tmp_path / "learners" / "distilled-seed1.safetensors", tmp_path / "memories" / "distilled-seed1.safetensors"]


def test_continual_run_folder_holds_learners_and_memories(digits, tmp_path, capsys) -> None:
    from fedcl.continual.command import main as continual_main
    from strategies.replay import DistilledBuffer

    out = tmp_path / "run"
    assert continual_main(["benchmark=split_digits", "strategies=[naive,distilled]", "mem_size=10", "seeds=[0]",
                           "model=mlp", "model_kwargs.width=16", "epochs=1", "n_experiences=2",
                           "distill.iterations=2", "distill.batch_real=16", "distill.model_kwargs.width=8",
                           "distill.engine.dsa=false", "distill.gdumb_epochs=20", "device=cpu", f"out={out}"]) == 0
    assert sorted(p.name for p in (out / "learners").iterdir()) == ["distilled.safetensors", "naive.safetensors"]
    assert [p.name for p in (out / "memories").iterdir()] == ["distilled.safetensors"]  # naive keeps no memory
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("naive", "distilled"):
        model, meta = load_model(out / "learners" / f"{name}.safetensors")
        assert (meta["strategy"], meta["benchmark"], meta["model_kwargs"]) == (name, "split_digits", {"width": 16})
        # the final learner tested on the whole test set is the run's final stream accuracy
        acc = float((predict(model, digits.test_images) == digits.test_labels).float().mean())
        assert acc == pytest.approx(metrics["strategies"][name]["final_accuracy"]["mean"], abs=1e-6)
    # the memory restores the buffer (state_dict round trip) and is a synthetic set fedcl evaluate reads
    state = load_memory_state(out / "memories" / "distilled.safetensors")
    buffer = DistilledBuffer(10)
    buffer.load_state_dict(state)
    assert buffer.class_counts() == {c: 1 for c in range(10)} and buffer.experiences == 2
    assert main(["evaluate", str(out / "memories" / "distilled.safetensors"), "eval.models=1", "eval.epochs=2",
                 "device=cpu"]) == 0
    assert "set (10 images) on digits" in capsys.readouterr().out


@pytest.mark.slow
def test_federated_run_folder_holds_each_strategys_global_model(digits, tmp_path) -> None:
    from fedcl.federated.command import main as federated_main

    out = tmp_path / "run"
    assert federated_main(["iterations=5", "width=16", "server_epochs=20", "threads=1", "ipc=3", "num_clients=2",
                           "strategies=[oneshot,fedavg]", "rounds=1", "centralised=false", f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("oneshot", "fedavg"):
        model, meta = load_model(out / "models" / f"{name}.safetensors")
        assert (meta["strategy"], meta["model"], meta["model_kwargs"]) == (name, "convnet", {"width": 16})
        # the saved global model is the one the server evaluated last
        acc = float((predict(model, digits.test_images) == digits.test_labels).float().mean())
        assert acc == pytest.approx(metrics["strategies"][name]["final_accuracy"], abs=1e-6)
        assert meta["final_accuracy"] == pytest.approx(acc, abs=1e-6)
