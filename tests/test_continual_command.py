"""`fedcl continual`: run folder and metrics schema, override keys, bad input before training, benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcl.continual.benchmarks import make_benchmark
from fedcl.continual.command import main
from fedcl.errors import ConfigError, DataError

TINY = ["epochs=1", "n_experiences=2", "distill.iterations=2", "distill.batch_real=16", "distill.model_kwargs.width=8",
        "distill.engine.dsa=false", "distill.gdumb_epochs=20", "device=cpu"]


def test_command_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["benchmark=split_digits", "strategies=[naive,herding,distilled]", "mem_size=10", "seeds=[0,1]",
               "model=mlp", "model_kwargs.width=16", f"out={out}", *TINY])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.json", "results.md", "accuracy_matrix.png",
                                               "learners", "memories"}
    assert len(list((out / "learners").iterdir())) == 6 and len(list((out / "memories").iterdir())) == 2
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["strategies"]) == ["naive", "herding", "distilled"]
    for s in m["strategies"].values():
        assert 0.0 <= s["final_accuracy"]["mean"] <= 1.0 and s["final_accuracy"]["std"] >= 0.0
        assert -1.0 <= s["forgetting"]["mean"] <= 1.0  # negative: backward transfer
        assert len(s["distill_seconds_per_experience"]) == 2
        assert len(s["runs"]) == 2 and len(s["runs"][0]["accuracy_matrix"]) == 2
        assert all(0.0 <= v <= 1.0 for row in s["runs"][0]["accuracy_matrix"] for v in row)
    assert all(v > 0 for v in m["strategies"]["distilled"]["distill_seconds_per_experience"])
    assert m["strategies"]["naive"]["distill_seconds_per_experience"] == [0.0, 0.0]
    assert m["strategies"]["distilled"]["runs"][0]["memory_class_counts"] == {str(c): 1 for c in range(10)}
    assert "| distilled |" in (out / "results.md").read_text()
    assert "mem_size: 10" in (out / "config.yaml").read_text()
    assert "| naive |" in capsys.readouterr().out


def test_same_learner_baselines_and_gain_column(tmp_path):
    out = tmp_path / "run"
    assert main(["benchmark=split_digits", "strategies=[distilled,distilled_random,distilled_herding]",
                 "mem_size=10", "seeds=[0,1]", "distill.param=idc", "distill.soft_labels=true", f"out={out}",
                 *TINY]) == 0
    m = json.loads((out / "metrics.json").read_text())["strategies"]
    acc = {name: s["final_accuracy"]["mean"] for name, s in m.items()}
    gain = m["distilled"]["gain_over_selection"]
    best = max(("distilled_random", "distilled_herding"), key=acc.get)
    assert gain["baseline"] == best and gain["mean"] == pytest.approx(acc["distilled"] - acc[best])
    assert "gain_over_selection" not in m["distilled_random"] and gain["std"] >= 0.0
    for s in m.values():  # the same budget and share rule: one image's worth per class at the end
        assert s["runs"][0]["memory_class_budgets"] == {str(c): 1 for c in range(10)}
    # idc decodes each stored image into 4 for the learner; a selection stores plain real images
    assert m["distilled"]["runs"][0]["memory_class_counts"] == {str(c): 4 for c in range(10)}
    assert m["distilled_herding"]["runs"][0]["memory_class_counts"] == {str(c): 1 for c in range(10)}
    table = (out / "results.md").read_text()
    assert "gain over selection" in table and f"(vs {best})" in table
    # with distill.param_selections the baseline stores its picks the same way: 4 downsampled real images each
    tiled = tmp_path / "tiled"
    assert main(["benchmark=split_digits", "strategies=[distilled_herding]", "mem_size=10", "distill.param=idc",
                 "distill.param_selections=true", f"out={tiled}", *TINY]) == 0
    assert "selection memories (distilled_random, distilled_herding) in the same format" in \
        (tiled / "results.md").read_text()
    assert "as full-resolution real images" in table
    run = json.loads((tiled / "metrics.json").read_text())["strategies"]["distilled_herding"]["runs"][0]
    assert run["memory_class_counts"] == {str(c): 4 for c in range(10)}
    assert run["memory_class_budgets"] == {str(c): 1 for c in range(10)}


@pytest.mark.parametrize("args, error, match", [
    (["mem_size=5"], ConfigError, "mem_size >= 10"),
    (["strategies=[replay,nope]"], ConfigError, "unknown strategies"),
    (["strategies=[distilled_dp]"], ConfigError, "privacy.epsilon"),
    (["benchmark=split_nothing"], ConfigError, "unknown benchmark"),
    (["no_such_key=1"], ConfigError, "no_such_key"),
    (["mem_size=lots"], ConfigError, "mem_size"),
    (["distill.param=pixels"], ConfigError, "pixels"),
    (["distill.param=idc", "distill.param_kwargs.factor=3"], ConfigError, "factor=3"),
    (["mem_size=20", "distill.param=haba"], ConfigError, "haba"),
    (["strategies=[distilled_dp]", "privacy.epsilon=1", "distill.soft_labels=true"], ConfigError, "soft labels"),
    (["distill.shrink=cut"], ConfigError, "distill.shrink"),
    (["strategies=[distilled_random]", "mem_size=100", "distill.param=haba", "distill.param_selections=true"],
     ConfigError, "selects real images"),
    (["eval.split=val"], ConfigError, "data.val_fraction"),
    (["eval.split=train", "data.val_fraction=0.2"], ConfigError, "eval.split"),
])
def test_bad_input_fails_before_training(tmp_path, args, error, match):
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        main([*args, f"out={out}", *TINY])
    assert not out.exists()


def test_missing_data_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataError, match="not found"):
        main(["benchmark=split_mnist", f"data.root={tmp_path / 'empty'}", f"out={out}", *TINY])
    assert not out.exists()


def test_class_order_is_fixed_by_seed():
    def order(seed):
        return [tuple(e.classes_in_this_experience) for e in make_benchmark("split_digits", seed=seed).scenario.train_stream]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(c for exp in order(3) for c in exp) == list(range(10))


def test_config_file_in_repo_loads():
    from fedcl.config import load_config
    from fedcl.continual.config import ContinualConfig

    root = Path(__file__).parents[1] / "configs" / "continual"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_config(ContinualConfig, [str(path)])
        assert cfg.strategies and cfg.mem_size >= 10


def test_a_mapping_override_replaces_the_files_mapping():
    from fedcl.config import load_config
    from fedcl.continual.config import ContinualConfig

    path = str(Path(__file__).parents[1] / "configs" / "continual" / "split_fashion_mnist.yaml")
    assert load_config(ContinualConfig, [path]).distill.param_kwargs == {"factor": 2}
    # free pixels take no factor: key={} drops the file's options instead of merging into them
    cfg = load_config(ContinualConfig, [path, "distill.param=images", "distill.param_kwargs={}"])
    assert cfg.distill.param == "images" and cfg.distill.param_kwargs == {}
    assert load_config(ContinualConfig, [path, "distill.param_kwargs={factor: 4}"]).distill.param_kwargs == {"factor": 4}
    # a dotted key still changes one entry and keeps the rest
    cfg = load_config(ContinualConfig, [path, "distill.engine={dsa: false}", "distill.engine.lr_img=0.5"])
    assert cfg.distill.engine == {"dsa": False, "lr_img": 0.5}
    # a block of the schema (a dataclass) is still merged and validated, never replaced
    cfg = load_config(ContinualConfig, [path, "distill={iterations: 5}"])
    assert cfg.distill.iterations == 5 and cfg.distill.param == "idc" and cfg.distill.gdumb_epochs == 300
