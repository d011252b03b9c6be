"""Split-MNIST-6k: final accuracy against memory size, merged from the parts of the study.

``continual_mnist.py`` runs one (memories, seeds, strategies) part per ``--tag`` and writes
``experiments/results/TAG.json``; this script reads every part named on the command line
(seed-0 rows only, so that all points share one protocol and one class order), and writes
``continual_memory.md`` (a memory x strategy table) and ``continual_memory.png`` (accuracy
against memory, log axis, one line per strategy).

    .venv/bin/python experiments/continual_memory.py continual_mnist continual_mnist_sweep_stock ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("replay", "herding", "gdumb", "distilled")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tags", nargs="+", help="result parts (experiments/results/TAG.json), later ones win")
    a = p.parse_args()
    points: dict[tuple[str, int], dict] = {}
    for tag in a.tags:
        for r in json.loads((RESULTS / f"{tag}.json").read_text()):
            points[(r["strategy"], int(r["memory"]))] = {**r, "source": tag}
    mems = sorted({m for _, m in points})
    lines = ["| memory | " + " | ".join(STRATEGIES) + " |", "|---" * (len(STRATEGIES) + 1) + "|"]
    for m in mems:
        cells = [f"{points[(s, m)]['final_accuracy']:.3f}" if (s, m) in points else "not run" for s in STRATEGIES]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Sources: " + ", ".join(f"`{t}.json`" for t in a.tags) + "."]
    table = "\n".join(lines) + "\n"
    (RESULTS / "continual_memory.md").write_text(table)
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for s in STRATEGIES:
        pts = sorted((m, points[(s, m)]["final_accuracy"]) for m in mems if (s, m) in points)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=s)
    ax.set_xscale("log")
    ax.set_xticks(mems)
    ax.set_xticklabels([str(m) for m in mems])
    ax.set_xticks([], minor=True)  # the log axis's minor labels (3x10^1 ...) would overprint the memories
    ax.set_xlabel("memory (images)")
    ax.set_ylabel("final average accuracy")
    ax.set_title("Split-MNIST-6k, class-incremental, seed 0")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(RESULTS / "continual_memory.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
