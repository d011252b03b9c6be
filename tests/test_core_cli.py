"""The fedcl CLI: a real distill run folder, evaluate, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedcl.cli import main
from fedcl.distill import SyntheticSet

FAST = ["iterations=2", "model_kwargs.width=16", "eval.models=2", "eval.epochs=5", "progress=false", "device=cpu"]


def test_distill_writes_a_complete_run_folder(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["distill", "method=dm", "ipc=2", "seed=3", f"out={out}", *FAST]) == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.json", "synthetic.safetensors", "grid.png"}
    m = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "method", "ipc", "model", "seed", "iterations", "seconds_per_iteration",
                "distill_seconds", "device", "test_accuracy"):
        assert key in m, key
    assert m["dataset"] == "digits" and m["method"] == "dm" and m["ipc"] == 2 and m["seed"] == 3
    assert m["iterations"] == 2 and m["test_accuracy"]["n_models"] == 2
    assert 0.0 <= m["test_accuracy"]["mean"] <= 1.0
    syn = SyntheticSet.load(out / "synthetic.safetensors")
    assert len(syn) == 20 and syn.meta["fedcl_version"] and syn.meta["mean"] and syn.meta["std"]
    assert "ipc: 2" in (out / "config.yaml").read_text()
    assert "test accuracy" in capsys.readouterr().out
    # evaluate the saved set on two architectures, with a run folder
    ev = tmp_path / "ev"
    assert main(["evaluate", str(out / "synthetic.safetensors"), "--model", "convnet,mlp", "eval.models=1",
                 "eval.epochs=3", f"out={ev}"]) == 0
    table = capsys.readouterr().out
    assert "| convnet |" in table and "| mlp |" in table
    assert set(json.loads((ev / "metrics.json").read_text())["models"]) == {"convnet", "mlp"}


def test_yaml_config_and_override(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: random\nipc: 1\neval:\n  models: 1\n  epochs: 2\n")
    out = tmp_path / "r"
    assert main(["distill", str(cfg), "ipc=3", f"out={out}", "device=cpu", "progress=false"]) == 0
    assert json.loads((out / "metrics.json").read_text())["ipc"] == 3


BAD = [
    (["dataset=foo"], "unknown dataset 'foo'; valid:"),
    (["method=bar"], "unknown distillation method 'bar'; valid:"),
    (["model=baz"], "unknown model 'baz'; valid:"),
    (["nokey=1"], "Key 'nokey' not in"),
    (["ipc=abc"], "ipc"),
    (["ipc=0"], "ipc must be at least 1"),
    (["ipc=500"], "smallest class"),
    (["dataset=mnist", "data.root=/nonexistent/fedcl"], "not found under"),
    (["method=random", "iterations=5"], "bad option for method 'random'"),
    (["missing.yaml"], "config file not found"),
    (["privacy.epsilon=1", "method=herding"], "cannot be made differentially private"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_clear_line(args, message, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert main(["distill", *args, f"out={out}", "eval.models=1", "eval.epochs=1", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedcl: error:") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_evaluate_refuses_a_file_that_is_not_a_synthetic_set(tmp_path, capsys) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["evaluate", str(bad)]) == 2
    assert "not a readable fedcl synthetic set" in capsys.readouterr().err


def test_unknown_command_and_help(capsys) -> None:
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "distill" in capsys.readouterr().out


def test_console_script_exits_nonzero_without_traceback(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fedcl.cli", "distill", "dataset=nope", f"out={tmp_path / 'x'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["fedcl: error: unknown dataset 'nope'; valid: cifar10, cifar100, "
                                                "cifar10_jpeg, digits, fashion_mnist, imagefolder, mnist, svhn"]


@pytest.mark.parametrize(("command", "args", "message"), [
    ("federated", ["privacy.epsilon=1", "privacy.sample_rate=0.1"], "set batch_real, not privacy.sample_rate"),
    ("federated", ["batch_real=0"], "batch_real must be at least 1"),
    ("federated", ["privacy.epsilon=1", "privacy.replay=-1"], "privacy.replay must be an integer >= 0"),
    ("federated", ["server_noise_decay=-0.5"], "server_noise_decay must be >= 0"),
    ("federated", ["privacy.epsilon=1", "privacy.budget=0.5"], "privacy.budget must be > 0 and >= privacy.epsilon"),
    ("privacy-sweep", ["methods=[reel]"], "unknown method 'reel'; valid: dpsgd, real"),
])
def test_bad_federated_and_sweep_input_is_one_clear_line(command, args, message, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert main([command, *args, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedcl: error:") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
