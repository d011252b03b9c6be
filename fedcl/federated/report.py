"""results.md and accuracy_vs_bytes.png of a ``fedcl federated`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["class_table", "plot_accuracy_vs_bytes", "results_table", "write_report"]


def _cumulative(per_round: list[int]) -> list[int]:
    out, total = [], 0
    for b in per_round:
        total += b
        out.append(total)
    return out


def results_table(metrics: dict[str, Any]) -> str:
    """A markdown table: one row per strategy (and the centralised baseline)."""
    lines = ["| strategy | rounds | final accuracy | uplink bytes | downlink bytes | dropped summaries | refused summaries |",
             "|---|---|---|---|---|---|---|"]
    for name, r in metrics["strategies"].items():
        lines.append(f"| {name} | {r['rounds']} | {r['final_accuracy']:.4f} | {r['uplink_bytes']:,} | "
                     f"{r['downlink_bytes']:,} | {r['dropped_summaries']} | {r.get('refused_summaries', 0)} |")
    if "centralised" in metrics:
        c = metrics["centralised"]
        lines.append(f"| centralised ({c['epochs']} epochs, all {c['train_images']} images) | - | "
                     f"{c['final_accuracy']:.4f} | - | - | - | - |")
    return "\n".join(lines)


def class_table(metrics: dict[str, Any]) -> str:
    """A markdown table of the final model's accuracy on each class (and, for summary strategies,
    how many summary images of that class the server trained on); empty when no run has them."""
    runs = {n: r for n, r in metrics["strategies"].items() if r.get("class_accuracy")}
    if not runs:
        return ""
    k = max(len(r["class_accuracy"]) for r in runs.values())
    lines = ["| strategy | " + " | ".join(f"class {c}" for c in range(k)) + " |", "|---" * (k + 1) + "|"]
    for name, r in runs.items():
        counts = r.get("summary_class_images") or [None] * k
        cells = [f"{a:.3f}" + (f" ({n})" if n is not None else "") for a, n in zip(r["class_accuracy"], counts)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ("Final accuracy on each class of the test set; in brackets, the summary images of that class "
            "the server trained on.\n\n" + "\n".join(lines))


def plot_accuracy_vs_bytes(metrics: dict[str, Any], path: Path) -> Path:
    """Test accuracy against cumulative uplink bytes (log x), one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in metrics["strategies"].items():
        xs = _cumulative(r["uplink_bytes_per_round"])
        ys = r["accuracy_per_round"][1:len(xs) + 1]
        one = len(ys) == 1  # a one-round strategy is a single point: draw it large and on top, so a
        # multi-round curve that starts at the same place does not hide it
        ax.plot(xs[:len(ys)], ys, marker="*" if one else "o", markersize=12 if one else 3, zorder=3 if one else 2,
                label=name)
    if "centralised" in metrics:
        ax.axhline(metrics["centralised"]["final_accuracy"], color="grey", linestyle="--", label="centralised")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative uplink bytes")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{metrics['dataset']}, {metrics['num_clients']} clients, {metrics['partition']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(folder: Path, metrics: dict[str, Any]) -> None:
    """Write ``results.md`` and ``accuracy_vs_bytes.png`` into ``folder``."""
    head = (f"# fedcl federated: {metrics['dataset']}, {metrics['num_clients']} clients, {metrics['partition']} "
            f"(alpha {metrics['alpha']}), ipc {metrics['ipc']}, codec {metrics['codec']}\n\n")
    if "device" in metrics:  # metrics.json written before the device was recorded lack it
        gpu = f" ({metrics['gpu']})" if metrics.get("gpu") and metrics["device"] != "cpu" else ""
        res = metrics.get("client_resources", {})
        head += (f"Device: {metrics['device']}{gpu}; each client reserves {res.get('num_cpus', '?')} CPU and "
                 f"{res.get('num_gpus', '?')} GPU. Total time {metrics.get('seconds', float('nan')):.0f} s.\n\n")
    per_class = class_table(metrics)
    (folder / "results.md").write_text(head + results_table(metrics) + "\n\n" + (per_class + "\n\n" if per_class else "")
                                       + "![accuracy vs bytes](accuracy_vs_bytes.png)\n")
    plot_accuracy_vs_bytes(metrics, folder / "accuracy_vs_bytes.png")
