"""``fedcl bench``: the quick path end to end, the gain column, soft-label rows apart, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedcl.bench import QUICK, BenchConfig, add_gains, bench_config_argv, plan
from fedcl.cli import main
from fedcl.config import load_config
from fedcl.distill import SyntheticSet

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "bench"

# --quick, shrunk to seconds: two ipcs, two hard engines and one soft, tiny networks and schedules
TINY = ["engines=[random,dm]", "ipcs=[1,2]", "soft_label_engines=[dm]", "engine.dm.iterations=2",
        "engine.dm.soft_label_steps=2", "model_kwargs.width=16", "cross_arch=[convnet,mlp]", "eval.models=2",
        "eval.epochs=3", "device=cpu", "progress=false"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    out, md = tmp / "run", tmp / "results" / "table.md"
    assert main(["bench", "--quick", *TINY, f"out={out}", f"results_md={md}"]) == 0
    return out, json.loads((out / "metrics.json").read_text()), md


def test_quick_run_writes_folder_tables_device_and_versions(quick_run) -> None:
    out, m, md = quick_run
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.json", "results.md", "sets"}
    # 2 ipcs x (random, dm hard; random, dm soft), every set saved
    assert sorted(p.name for p in (out / "sets" / "digits").iterdir()) == sorted(
        f"{e}-ipc{k}{s}.safetensors" for e in ("random", "dm") for k in (1, 2) for s in ("", "-soft"))
    text = (out / "results.md").read_text()
    assert md.read_text() == text  # results_md: the same file, where it was asked
    assert "`fedcl bench --quick" in text and m["device"].startswith("cpu") and m["device"] in text
    for name in ("fedcl", "torch", "python"):
        assert f"{name} {m['versions'][name]}" in text
    cfg = (out / "config.yaml").read_text()
    assert "epochs: 3" in cfg and "models: 2" in cfg  # --quick, then the command line's overrides
    assert len(m["rows"]) == 8
    for r in m["rows"]:
        assert set(r["cross_arch"]) == {"convnet", "mlp"} and r["cross_arch"]["convnet"] == r["accuracy"]
        assert r["accuracy"]["n_models"] == 2 and r["stored_bytes"] > 0 and r["distill_seconds"] >= 0
        assert r["num_images"] == 10 * r["ipc"]
        timed = r["method"] == "dm" and r["iterations"] > 0
        assert (r["seconds_per_iteration"] is not None) == timed
    assert "## digits: cross-architecture" in text and "| set | ipc | labels | convnet | mlp |" in text


def test_gain_column_is_points_over_random_of_the_same_table(quick_run) -> None:
    _, m, _ = quick_run
    rows = m["rows"]
    for r in rows:
        base = next(b for b in rows if b["engine"] == "random" and b["ipc"] == r["ipc"]
                    and b["soft_labels"] == r["soft_labels"])
        assert r["gain_over_random"] == pytest.approx(100 * (r["accuracy"]["mean"] - base["accuracy"]["mean"]))
    rows = [{"dataset": "d", "engine": e, "ipc": k, "soft_labels": s, "accuracy": {"mean": a}}
            for e, k, s, a in [("random", 1, False, 0.5), ("dm", 1, False, 0.75), ("random", 1, True, 0.6),
                               ("dm", 1, True, 0.55), ("dm", 10, False, 0.9)]]
    add_gains(rows)
    assert [r["gain_over_random"] for r in rows[:4]] == pytest.approx([0.0, 25.0, 0.0, -5.0])
    assert rows[-1]["gain_over_random"] is None  # no random at that ipc: no gain, not a made-up one


def test_soft_label_rows_are_kept_apart(quick_run) -> None:
    out, m, _ = quick_run
    text = (out / "results.md").read_text()
    hard_part, soft_part = text.split("## digits: hard labels")[1].split("## digits: soft labels")
    soft_part = soft_part.split("## digits: cross-architecture")[0]
    rows = {(r["engine"], r["ipc"], r["soft_labels"]): r for r in m["rows"]}
    for (engine, ipc, soft), r in rows.items():
        assert SyntheticSet.load(out / r["set"]).soft == soft
        if soft:  # soft labels are stored and counted: num_classes float32 numbers per decoded image
            assert r["stored_bytes"] == rows[(engine, ipc, False)]["stored_bytes"] + 4 * 10 * r["num_images"]

    def table(part: str) -> set[tuple[str, int, int]]:  # (engine, ipc, stored bytes) of each row
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()
                 if line.startswith("| ") and not line.startswith("| engine")]
        return {(c[0], int(c[1]), int(c[-2].replace(",", ""))) for c in cells}

    for part, soft in ((hard_part, False), (soft_part, True)):
        assert table(part) == {(e, k, r["stored_bytes"]) for (e, k, s), r in rows.items() if s == soft}
    # the soft table's random: the random row's very images, with the soft labels
    for ipc in (1, 2):
        hard = SyntheticSet.load(out / rows[("random", ipc, False)]["set"])
        soft = SyntheticSet.load(out / rows[("random", ipc, True)]["set"])
        assert torch.equal(hard.images, soft.images) and soft.soft and not hard.soft


def test_quick_overrides_come_between_the_file_and_the_command_line(tmp_path) -> None:
    cfg_file = tmp_path / "b.yaml"
    cfg_file.write_text("datasets: [mnist]\nipcs: [50]\nengine:\n  dm:\n    iterations: 5000\n    batch_real: 64\n")
    words = bench_config_argv([str(cfg_file), "--quick", "eval.epochs=7"])
    assert words == [str(cfg_file), *QUICK, "eval.epochs=7"]
    cfg = load_config(BenchConfig, words)
    assert cfg.datasets == ["digits"] and cfg.ipcs == [1, 10] and cfg.eval.models == 2 and cfg.eval.epochs == 7
    assert cfg.engine["dm"] == {"iterations": 20, "batch_real": 64, "soft_label_steps": 20}  # the file's batch_real kept


def test_shipped_configs_are_valid_and_digits_is_the_default() -> None:
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"digits.yaml", "mnist.yaml", "fashion_mnist.yaml", "cifar10_jpeg.yaml"} <= names
    for name in sorted(names):
        text = (CONFIGS / name).read_text()
        assert text.startswith("#") and "2-core CPU" in text.split("\n\n")[0], name  # the header says how long
        cfg = load_config(BenchConfig, [str(CONFIGS / name)])
        assert plan(cfg), name  # names and options valid
    assert load_config(BenchConfig, [str(CONFIGS / "digits.yaml")]) == BenchConfig()


BAD = [
    (["engines=[random,nope]"], "unknown distillation method 'nope'"),
    (["datasets=[nope]"], "unknown dataset 'nope'"),
    (["ipcs=[0]"], "every ipc must be at least 1"),
    (["ipcs=[1,5000]"], "ipc=5000 is more than the smallest class of digits has"),
    (["engines=[dm,dsa]"], "gains over random need engine 'random'"),
    (["soft_label_engines=[herding]"], "selects real images"),
    (["engine.dm.nope=1"], "bad option for method 'dm'"),
    (["cross_arch=[convnet,nope]"], "unknown model 'nope'"),
    (["eval.split=val"], "eval.split=val needs a validation split"),
    (["--fast"], "unexpected option '--fast'"),
    (["engines=[]"], "engines is empty"),
    (["engines=[random,dm,dm]"], "engines lists 'dm' twice"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_input_one_line_exit_2_no_run_folder(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["bench", "--quick", *argv, f"out={out}", f"results_md={tmp_path / 'r.md'}", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedcl: error: ") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no temporary one, no results file


def test_gains_false_runs_without_random(tmp_path) -> None:
    cfg = load_config(BenchConfig, ["engines=[dm]", "ipcs=[1,10]", "gains=false", "soft_label_engines=[dm]"])
    rows = plan(cfg)
    assert [(r.engine, r.soft) for r in rows] == [("dm", False), ("dm", True)] * 2  # no soft baseline either


def test_rows_can_be_chosen_on_validation_data(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["bench", "engines=[random,herding]", "ipcs=[1]", "soft_label_engines=[]", "cross_arch=[convnet]",
                 "model_kwargs.width=16", "eval.models=1", "eval.epochs=2", "data.val_fraction=0.2", "eval.split=val",
                 "device=cpu", f"out={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "val" and [r["engine"] for r in m["rows"]] == ["random", "herding"]
    text = (out / "results.md").read_text()
    assert "| val accuracy % |" in text and "test accuracy" not in text and "## digits: soft labels" not in text
    assert "cross-architecture" not in text  # one network: the main table says it all


def test_every_finished_row_is_written_before_the_next_runs(tmp_path, monkeypatch) -> None:
    import fedcl.bench as bench

    cfg = load_config(BenchConfig, ["engines=[random,herding]", "ipcs=[1]", "soft_label_engines=[]",
                                    "cross_arch=[convnet]", "model_kwargs.width=8", "eval.models=1", "eval.epochs=1",
                                    "device=cpu", "progress=false"])
    real_row, calls = bench.run_row, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # a run stopped while its second row is going
            m = json.loads((tmp_path / "metrics.json").read_text())
            assert not m["complete"] and [r["engine"] for r in m["rows"]] == ["random"]
            assert "**Partial**: 1 of 2 rows" in (tmp_path / "results.md").read_text()
            raise KeyboardInterrupt
        return real_row(*args, **kwargs)

    monkeypatch.setattr(bench, "run_row", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(cfg, tmp_path)
    monkeypatch.setattr(bench, "run_row", real_row)
    m = bench.run_bench(cfg, tmp_path)
    assert m["complete"] and "Partial" not in (tmp_path / "results.md").read_text()


# a row of seconds: one random and one herding row at ipc 1, a width-8 ConvNet trained for one epoch
RESUMABLE = ["ipcs=[1]", "soft_label_engines=[]", "cross_arch=[convnet]", "model_kwargs.width=8", "eval.models=1",
             "eval.epochs=1", "device=cpu", "progress=false"]


def test_resume_reuses_the_rows_of_an_earlier_run_and_runs_the_rest(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["bench", "engines=[random]", *RESUMABLE, f"out={first}"]) == 0
    assert main(["bench", "engines=[random,herding]", *RESUMABLE, f"resume={first}", f"out={second}"]) == 0
    old = json.loads((first / "metrics.json").read_text())["rows"][0]
    m = json.loads((second / "metrics.json").read_text())
    reused, ran = m["rows"]
    assert reused["engine"] == "random" and reused["reused_from"] == str(first) and reused["accuracy"] == old["accuracy"]
    assert ran["engine"] == "herding" and "reused_from" not in ran and m["complete"]
    assert [o["folder"] for o in m["resumed"]] == [str(first)]
    assert m["resumed"][0]["command"].startswith("fedcl bench 'engines=[random]'")
    copied = SyntheticSet.load(second / reused["set"])  # the earlier set, copied into this run folder
    assert torch.equal(copied.images, SyntheticSet.load(first / old["set"]).images)
    text = (second / "results.md").read_text()
    assert "Reused from an earlier run under the same protocol (1 of 2 rows: random ipc 1)" in text


def test_resume_takes_rows_from_several_folders_the_first_listed_winning(tmp_path) -> None:
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert main(["bench", "engines=[random]", *RESUMABLE, f"out={first}"]) == 0
    assert main(["bench", "engines=[random,herding]", *RESUMABLE, f"out={second}"]) == 0
    assert main(["bench", "engines=[random,herding]", *RESUMABLE, f"resume=[{first},{second}]", f"out={third}"]) == 0
    m = json.loads((third / "metrics.json").read_text())
    assert [r["reused_from"] for r in m["rows"]] == [str(first), str(second)]  # nothing ran again
    assert [o["folder"] for o in m["resumed"]] == [str(first), str(second)]
    text = (third / "results.md").read_text()
    assert "(1 of 2 rows: random ipc 1): `fedcl bench 'engines=[random]'" in text
    assert "(1 of 2 rows: herding ipc 1): `fedcl bench 'engines=[random,herding]'" in text


@pytest.mark.parametrize("written", ["null", "/an/older/run"])
def test_resume_reads_a_run_written_when_resume_held_one_folder(written, tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["bench", "engines=[random]", *RESUMABLE, f"out={first}"]) == 0
    conf = first / "config.yaml"
    assert "resume: []" in conf.read_text()
    conf.write_text(conf.read_text().replace("resume: []", f"resume: {written}"))
    assert main(["bench", "engines=[random]", *RESUMABLE, f"resume={first}", f"out={second}"]) == 0
    assert json.loads((second / "metrics.json").read_text())["rows"][0]["reused_from"] == str(first)


def test_resume_runs_again_a_row_whose_options_differ(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["bench", "engines=[random,dm]", "engine.dm.iterations=1", *RESUMABLE, f"out={first}"]) == 0
    assert main(["bench", "engines=[random,dm]", "engine.dm.iterations=2", *RESUMABLE, f"resume={first}",
                 f"out={second}"]) == 0
    rows = json.loads((second / "metrics.json").read_text())["rows"]
    assert ["reused_from" in r for r in rows] == [True, False] and rows[1]["iterations"] == 2


def test_resume_evaluates_the_reused_set_on_the_networks_the_earlier_run_lacks(tmp_path, capsys) -> None:
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert main(["bench", "engines=[random,herding]", *RESUMABLE, f"out={first}"]) == 0
    (first / json.loads((first / "metrics.json").read_text())["rows"][1]["set"]).unlink()  # herding's set is gone
    capsys.readouterr()
    assert main(["bench", "engines=[random,herding]", *RESUMABLE, "cross_arch=[convnet,mlp]", f"resume={first}",
                 f"out={second}"]) == 0
    assert "lacks networks of cross_arch and its set; running it again" in capsys.readouterr().out
    old = json.loads((first / "metrics.json").read_text())["rows"]
    reused, ran = json.loads((second / "metrics.json").read_text())["rows"]
    assert reused["reused_from"] == str(first) and reused["evaluated_here"] == ["mlp"]
    assert reused["accuracy"] == old[0]["accuracy"] == reused["cross_arch"]["convnet"]  # kept, not trained again
    assert list(reused["cross_arch"]) == list(ran["cross_arch"]) == ["convnet", "mlp"]
    assert "reused_from" not in ran  # no set to evaluate mlp on: distilled again
    text = (second / "results.md").read_text()
    assert "(1 of 2 rows: random ipc 1 (mlp evaluated in this run))" in text and "cross-architecture" in text
    # fewer networks: the reused figures shrink to this run's; other mlp options: mlp evaluated again
    assert main(["bench", "engines=[random]", *RESUMABLE, f"resume={second}", f"out={third}"]) == 0
    row = json.loads((third / "metrics.json").read_text())["rows"][0]
    assert list(row["cross_arch"]) == ["convnet"] and "evaluated_here" not in row  # nothing evaluated in this run
    assert main(["bench", "engines=[random]", *RESUMABLE, "cross_arch=[convnet,mlp]", "arch_kwargs.mlp.width=16",
                 f"resume={second}", f"out={tmp_path / 'fourth'}"]) == 0
    row = json.loads((tmp_path / "fourth" / "metrics.json").read_text())["rows"][0]
    assert row["evaluated_here"] == ["mlp"] and row["cross_arch"]["convnet"] == reused["accuracy"]


@pytest.mark.parametrize("change,message", [
    (["eval.epochs=2"], "was evaluated with eval="),
    (["model_kwargs.width=16"], "was evaluated with model_kwargs={'width': 8}"),
    (["seed=1"], "was evaluated with seed=0"),
])
def test_resume_refuses_an_earlier_run_of_another_protocol(change, message, tmp_path, capsys) -> None:
    first = tmp_path / "first"
    assert main(["bench", "engines=[random]", *RESUMABLE, f"out={first}"]) == 0
    capsys.readouterr()
    assert main(["bench", "engines=[random]", *RESUMABLE, *change, f"resume={first}", f"out={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedcl: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


def test_resume_of_a_folder_that_is_not_a_bench_run_is_one_line(tmp_path, capsys) -> None:
    assert main(["bench", "engines=[random]", *RESUMABLE, f"resume={tmp_path}", f"out={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err
    assert "not a bench run folder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()
