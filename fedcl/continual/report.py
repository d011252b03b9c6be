"""The continual run's table (results.md) and accuracy-matrix plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_accuracy_matrices", "results_table"]


def results_table(metrics: dict[str, Any]) -> str:
    """A markdown table: final accuracy and forgetting (mean ± std over seeds), seconds per experience."""
    cfg = metrics["config"]
    lines = [f"# fedcl continual: {cfg['benchmark']}, memory {cfg['mem_size']}, seeds {cfg['seeds']}", "",
             "| strategy | final accuracy | forgetting | distill s/exp | train s/exp |", "|---|---|---|---|---|"]
    for name, m in metrics["strategies"].items():
        fa, fo = m["final_accuracy"], m["forgetting"]
        ds = sum(m["distill_seconds_per_experience"]) / len(m["distill_seconds_per_experience"])
        ts = sum(m["train_seconds_per_experience"]) / len(m["train_seconds_per_experience"])
        lines.append(f"| {name} | {fa['mean']:.3f} ± {fa['std']:.3f} | {fo['mean']:.3f} ± {fo['std']:.3f} "
                     f"| {ds:.1f} | {ts:.1f} |")
    lines += ["", "Accuracies are fractions of the test set; seconds are wall time on this machine "
              "(mean per experience, averaged over seeds)."]
    return "\n".join(lines) + "\n"


def plot_accuracy_matrices(metrics: dict[str, Any], path: str | Path) -> Path:
    """One panel per strategy: accuracy on test experience j (columns) after training experience i (rows), seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["strategies"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        mat = metrics["strategies"][name]["runs"][0]["accuracy_matrix"]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("test experience")
        ax.set_ylabel("after training experience")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
