"""Renders ``experiments/results/distill.json`` (written by bench_distill.py) as distill.md, csv and png."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

PUBLISHED = "published, full MNIST (REFERENCES.md): DC 91.7 / 97.4, DSA 88.7 / 97.8, random 64.9 / 95.1 at ipc 1 / 10"


def _pct(acc: dict[str, float]) -> str:
    return f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"


def _env(env: dict[str, Any]) -> str:
    if env.get("gpu"):  # a GPU run: the load and AMX of its host do not bear on the figures
        return (f"device {env['device']} ({env['gpu']}), host CPU {env['cpu']} ({env['cpu_count']} cores); torch "
                f"{env['torch']}, torchvision {env['torchvision']}, numpy {env['numpy']}, python {env['python']}, "
                f"fedcl {env['fedcl']}")
    return (f"device {env['device']}, CPU {env['cpu']} ({env['cpu_count']} cores, torch threads "
            f"{env['torch_threads']}, AMX {'yes' if env['amx'] else 'no'}), 1-min load average when written "
            f"{env['load_avg_1m']:.1f} (the CPU is shared with other jobs); torch {env['torch']}, torchvision "
            f"{env['torchvision']}, numpy {env['numpy']}, python {env['python']}, fedcl {env['fedcl']}")


def _table(rows: list[dict[str, Any]], baseline: str = "random") -> list[str]:
    out = ["| method | ipc | iterations | real/class/it | distill s | evaluation | test accuracy % (mean ± std) "
           "| vs random | note |", "|---|---|---|---|---|---|---|---|---|"]
    base = {r["ipc"]: r["acc"]["mean"] for r in rows if r["method"] == baseline}
    for r in sorted(rows, key=lambda r: (r["ipc"], r["method"])):
        gap = 100 * (r["acc"]["mean"] - base[r["ipc"]]) if r["ipc"] in base and r["method"] != baseline else None
        secs = f"{r['distill_seconds']:.0f}" if r.get("distill_seconds") else "-"
        ev = f"{r['acc']['n_models']} x {r['acc']['epochs']} ep"
        out.append(f"| {r['method']} | {r['ipc']} | {r['iterations'] or '-'} | {r.get('batch_real') or '-'} | {secs} | "
                   f"{ev} | {_pct(r['acc'])} | {'' if gap is None else f'{gap:+.2f}'} | {r.get('note', '')} |")
    return out


def _plot(points: list[dict[str, float]], path: Path, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["seconds"] / 60 for p in points], [100 * p["acc"] for p in points], marker="o")
    ax.axhline(97, color="grey", ls="--", lw=1, label="97% target")
    ax.axvline(20, color="red", ls=":", lw=1, label="20 min")
    ax.set_xlabel("distillation time (min, evaluation excluded)")
    ax.set_ylabel("test accuracy % (cheap evaluation)")
    ax.set_title(f"dm, MNIST-6k, ipc 10, {where}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _sec(x: float) -> str:
    return f"{x:.3f}" if x < 0.1 else f"{x:.2f}"  # GPU dm iterations take hundredths of a second


def _on(key: str) -> str:
    """Heading suffix of a GPU part (``speed_gpu`` ...): CPU and GPU figures sit side by side."""
    return ", on a GPU" if key.endswith("gpu") else ""


def write_report(res: dict[str, Any], out: Path) -> None:
    """Write distill.md (+ distill_*.csv, distill_curve.png) from the merged results."""
    md = ["# Distillation benchmark (issue 2)", "",
          "Written by `experiments/bench_distill.py` (`--part digits|mnist|speed|curve|ceiling`); every figure is "
          "measured by that script on the machine named under each part. MNIST-6k = the first 6,000 MNIST "
          "training images, tested on the official 10,000 test images. Accuracies are test accuracy of fresh "
          "ConvNets trained on the synthetic set (SGD, DSA augmentation, lr/10 at half the epochs). One current "
          "table per part and device; earlier runs are in git.", "",
          "Beside the authors' code (MTT and IDC on MNIST-6k, same data, network and settings, one CPU thread): "
          "[side_by_side.md](side_by_side.md), written by `experiments/side_by_side.py`.", ""]
    if res.get("notes"):  # the reading of the tables, kept in distill.json
        md += ["## What the tables say", ""] + [f"- {n}" for n in res["notes"]] + [""]
    for key in ("speed", "speed_gpu"):
        if key not in res:
            continue
        s = res[key]
        md += [f"## Seconds per iteration and peak memory, MNIST-6k ipc 10{_on(key)}", "",
               _env(s["env"]), "", f"Command: `{s.get('command', '')}`. Engines run back to back, "
               "interleaved over rounds; per-iteration wall time from the callback (first iteration of each run "
               "dropped). dm, dsa, gm read 256 real images per class per iteration; gm/dsa: one iteration = outer "
               "loop 10 x 10 classes + inner training (50 steps). mtt: one iteration = 20 student steps on the "
               "whole set, matched to 2 expert epochs (the experts' training, once, is not in s/it); kip: 2 random "
               "ConvNets, 128 real images per class; frepo: 128 real images per class. Peak RSS: the run's process "
               "(each run its own), beside its resident set after loading the data (rows timed before runs had "
               "their own process have none).", "",
               "CPU-s/it is the process CPU time per iteration (all threads): on an idle 2-core machine the "
               "wall time would be about CPU-s/it / 2 or more; under contention the wall time is far higher."
               if key == "speed" else "Each stamp waits for the GPU (`torch.cuda.synchronize`) before it is taken.", "",
               "| engine | median wall s/it | min wall s/it | median CPU-s/it | iterations timed | torch threads "
               "| load when written | peak RSS MB (after data) | peak CUDA MB |", "|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {r['engine']} | {_sec(r['median_s'])} | {_sec(r['min_s'])} | {_sec(r.get('cpu_median_s', float('nan')))} "
               f"| {r['n']} | {r.get('threads', s['env']['torch_threads'])} | {r.get('load_avg_1m', float('nan')):.1f} "
               f"| {_mb(r.get('peak_rss_mb'))} ({_mb(r.get('base_rss_mb'))}) | {_mb(r.get('cuda_peak_mb'))} |"
               for r in s["rows"]]
        md += ["", "Target: dm with DSA <= 1.5 s/it on a 2-core CPU." if key == "speed" else
               "On CUDA the default dm embeds with `net.embed` (`fast_embed: auto`), the faster row here.", ""]
    tables = (("digits", "digits (8x8, bundled), ConvNet depth 2, 5 evaluation models"), ("mnist", "MNIST-6k, ConvNet"))
    for part, title in ((key, title) for base, title in tables for key in (base, base + "_gpu")):
        if part not in res:
            continue
        r = res[part]
        md += [f"## {title}{_on(part)}", "", _env(r["env"]), "", "Commands: " + ", ".join(
            f"`{c}`" for c in r.get("commands", [r.get("command", "")])), ""]
        md += _table(r["rows"])
        if "ceiling" in r:
            c = r["ceiling"]
            md += ["", f"Whole training set ({c['images']:,} images) under the same evaluation "
                   f"({c['acc']['n_models']} x {c['acc']['epochs']} ep): {_pct(c['acc'])} "
                   f"(`{c.get('command', '')}`; {_env(c['env'])})."]
        md += ["", "Targets: " + ("dm/dsa >= random + 15 points at ipc 1, >= random + 3 points at ipc 10."
                                  if part.startswith("digits") else "dsa and dm >= 88% at ipc 1 and >= 97% at ipc 10; "
                                  + PUBLISHED + "."), ""]
        with open(out / f"distill_{part}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["dataset", "method", "ipc", "iterations", "batch_real", "distill_seconds", "acc_mean",
                        "acc_std", "n_models", "eval_epochs"])
            for row in r["rows"]:
                w.writerow([row["dataset"], row["method"], row["ipc"], row["iterations"], row.get("batch_real"),
                            row.get("distill_seconds"), row["acc"]["mean"], row["acc"]["std"],
                            row["acc"]["n_models"], row["acc"]["epochs"]])
    for key in ("curve", "curve_gpu"):
        if key not in res:
            continue
        c, stem = res[key], "distill_" + key
        md += [f"## Accuracy against distillation time: dm, MNIST-6k, ipc 10{_on(key)}", "", _env(c["env"]), "",
               f"Command: `{c.get('command', '(running)')}`. Evaluation every K iterations with "
               f"{c.get('eval', 'a cheap evaluation')}, excluded from the time. Plot: `{stem}.png`.", "",
               "| iteration | distill minutes | accuracy % |", "|---|---|---|"]
        md += [f"| {p['iteration']} | {p['seconds'] / 60:.1f} | {100 * p['acc']:.2f} ± {100 * p['std']:.2f} |"
               for p in c["points"]]
        hit = next((p for p in c["points"] if p["acc"] >= 0.97), None)
        md += ["", ("First point at >= 97%: " + f"iteration {hit['iteration']}, {hit['seconds'] / 60:.1f} min."
                    if hit else "97% not reached in this run (cheap evaluation).")]
        if "final" in c:
            md += [f"Final set, full evaluation (5 models x {c['final']['epochs']} epochs): {_pct(c['final'])}."]
        md += [""]
        _plot(c["points"], out / f"{stem}.png", c["env"].get("gpu") or "2-core shared CPU")
        with open(out / f"{stem}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["iteration", "seconds", "acc_mean", "acc_std"])
            for p in c["points"]:
                w.writerow([p["iteration"], p["seconds"], p["acc"], p["std"]])
    missing = [part for part in ("speed", "digits", "mnist", "curve") if part not in res]
    if missing:
        md += ["## Not measured yet", "", "These parts have no results in this file: "
               + ", ".join(f"`--part {p}`" for p in missing) + "; their targets are open.", ""]
    (out / "distill.md").write_text("\n".join(md) + "\n")
