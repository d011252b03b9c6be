"""Split-MNIST-6k, class-incremental: stock replay / herding / GDumb vs distilled replay by memory size.

Protocol (issue 4): 5 experiences of 2 classes, the ConvNet, SGD lr 0.01 momentum 0.9,
minibatch 64, 5 epochs per experience. Data: the first 6,000 MNIST training images
("MNIST-6k") and the official 10k test set, from ../shared/data (or FEDCL_DATA).

Usage (slow on a shared 2-core CPU; run in the background):
    nice -n 10 .venv/bin/python experiments/continual_mnist.py --mems 20 100 --seeds 0 \
        > experiments/results/continual_mnist.log 2>&1 &
Writes experiments/results/continual_mnist.{json,csv,png} and appends to continual_mnist.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from fedcl.continual.command import run
from fedcl.continual.config import ContinualConfig, MemoryDistillConfig
from fedcl.data.registry import resolve_root

RESULTS = Path(__file__).parent / "results"


def versions() -> str:
    import avalanche
    import torch as t

    return f"torch {t.__version__}, avalanche-lib {avalanche.__version__}, python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mems", type=int, nargs="+", default=[20, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--strategies", nargs="+", default=["replay", "herding", "gdumb", "distilled"])
    p.add_argument("--iterations", type=int, default=200, help="dm iterations per experience")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--root", default=os.environ.get("FEDCL_DATA", str(Path(__file__).parents[1] / "../shared/data")))
    p.add_argument("--tag", default="continual_mnist")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for mem in a.mems:
        cfg = ContinualConfig(benchmark="split_mnist", strategies=list(a.strategies), mem_size=mem, seeds=list(a.seeds),
                              device="cpu", threads=a.threads, out=f"runs/{a.tag}-mem{mem}",
                              distill=MemoryDistillConfig(iterations=a.iterations))
        cfg.data.root = str(resolve_root(a.root))
        m = run(cfg, log=lambda s: print(s, flush=True))
        for name, s in m["strategies"].items():
            rows.append({"memory": mem, "strategy": name, "final_accuracy": s["final_accuracy"]["mean"],
                         "final_accuracy_std": s["final_accuracy"]["std"], "forgetting": s["forgetting"]["mean"],
                         "distill_s_per_exp": sum(s["distill_seconds_per_experience"]) / len(s["distill_seconds_per_experience"]),
                         "train_s_per_exp": sum(s["train_seconds_per_experience"]) / len(s["train_seconds_per_experience"]),
                         "seeds": len(a.seeds)})
        (RESULTS / f"{a.tag}.json").write_text(json.dumps(rows, indent=2))  # after each memory: partial results survive
    header = "| memory | strategy | final accuracy | forgetting | distill s/exp | train s/exp | seeds |"
    lines = [f"## {a.tag}: Split-MNIST-6k, dm iterations {a.iterations}", "",
             f"Device: CPU, {a.threads} threads, shared with other jobs (timings are noisy). {versions()}.", "",
             header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['memory']} | {r['strategy']} | {r['final_accuracy']:.3f} ± {r['final_accuracy_std']:.3f} | "
                     f"{r['forgetting']:.3f} | {r['distill_s_per_exp']:.1f} | {r['train_s_per_exp']:.1f} | {r['seeds']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (RESULTS / f"{a.tag}.md").write_text(table)
    with open(RESULTS / f"{a.tag}.csv", "w") as f:
        f.write(",".join(rows[0]) + "\n")
        for r in rows:
            f.write(",".join(str(v) for v in r.values()) + "\n")
    if len(a.mems) > 1:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name in a.strategies:
            pts = [(r["memory"], r["final_accuracy"]) for r in rows if r["strategy"] == name]
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("memory (images)")
        ax.set_ylabel("final average accuracy")
        ax.set_title("Split-MNIST-6k")
        ax.legend()
        fig.savefig(RESULTS / f"{a.tag}.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
