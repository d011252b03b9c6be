"""The continual run's table (results.md) and accuracy-matrix plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

__all__ = ["add_selection_gains", "plot_accuracy_matrices", "results_table"]


def add_selection_gains(metrics: dict[str, Any], synthesising: list[str], baselines: tuple[str, ...]) -> None:
    """Give every synthesising strategy its gain over the better (by mean) same-learner selection baseline.

    Writes ``gain_over_selection`` into ``metrics["strategies"][name]``: ``mean`` (difference of the mean
    final accuracies), ``std`` (of the per-seed differences, seeds paired), ``baseline`` (its name).
    Nothing is written when no baseline ran.
    """
    strategies = metrics["strategies"]
    present = [b for b in baselines if b in strategies]
    if not present:
        return
    best = max(present, key=lambda b: strategies[b]["final_accuracy"]["mean"])
    base = {r["seed"]: r["final_accuracy"] for r in strategies[best]["runs"]}
    for name in synthesising:
        runs = strategies[name]["runs"]
        diffs = [r["final_accuracy"] - base[r["seed"]] for r in runs if r["seed"] in base]
        strategies[name]["gain_over_selection"] = {
            "mean": strategies[name]["final_accuracy"]["mean"] - strategies[best]["final_accuracy"]["mean"],
            "std": statistics.pstdev(diffs) if len(diffs) > 1 else 0.0, "baseline": best}


def results_table(metrics: dict[str, Any]) -> str:
    """A markdown table: final accuracy and forgetting (mean ± std over seeds), seconds per experience."""
    cfg = metrics["config"]
    gains = any("gain_over_selection" in m for m in metrics["strategies"].values())
    head = "| strategy | final accuracy | forgetting | distill s/exp | train s/exp |"
    lines = [f"# fedcl continual: {cfg['benchmark']}, memory {cfg['mem_size']}, seeds {cfg['seeds']}", "",
             head + (" gain over selection |" if gains else ""), "|---" * (6 if gains else 5) + "|"]
    for name, m in metrics["strategies"].items():
        fa, fo = m["final_accuracy"], m["forgetting"]
        ds = sum(m["distill_seconds_per_experience"]) / len(m["distill_seconds_per_experience"])
        ts = sum(m["train_seconds_per_experience"]) / len(m["train_seconds_per_experience"])
        row = (f"| {name} | {fa['mean']:.3f} ± {fa['std']:.3f} | {fo['mean']:.3f} ± {fo['std']:.3f} "
               f"| {ds:.1f} | {ts:.1f} |")
        if gains:
            g = m.get("gain_over_selection")
            row += f" {g['mean']:+.3f} ± {g['std']:.3f} (vs {g['baseline']}) |" if g else " |"
        lines.append(row)
    where = "the validation split (data.val_fraction)" if cfg.get("eval_split") == "val" else "the test set"
    lines += ["", f"Accuracies are fractions of {where}; seconds are wall time on this machine "
              "(mean per experience, averaged over seeds)."]
    if gains:
        lines.append("Gain over selection: final accuracy minus that of the better of distilled_random and "
                     "distilled_herding, a memory of the same budget and share rule filled by selection and trained by "
                     "the same learner (± the std of the per-seed differences).")
    d = cfg.get("distill", {})
    if d.get("param", "images") != "images":
        stored = ("in the same format (each decoded image one selected real image)" if d.get("param_selections")
                  else "as full-resolution real images")
        lines.append(f"Memory format: the distilled memories are stored as param={d['param']} {d.get('param_kwargs', {})}; "
                     f"the selection memories (distilled_random, distilled_herding) {stored}.")
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
