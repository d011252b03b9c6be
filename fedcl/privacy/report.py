"""Outputs of the privacy sweep: results.csv, metrics.json, privacy_utility.png, audit.md."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["audit_table", "plot_privacy_utility", "summary", "write_outputs"]


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of accuracy and attack AUCs, per (method, target epsilon)."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["target_epsilon"])].append(r)
    out = []
    for (method, eps), rs in groups.items():
        item: dict[str, Any] = {"method": method, "target_epsilon": eps, "seeds": len(rs)}
        for key in ("accuracy", "loss_auc", "lira_auc", "loss_tpr_at_1fpr", "lira_tpr_at_1fpr",
                    "loss_eps_lower_bound", "lira_eps_lower_bound", "epsilon"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                item[key] = statistics.fmean(vals)
                # over seeds; with one seed, the spread over evaluation models
                item[f"{key}_std"] = (statistics.pstdev(vals) if len(vals) > 1
                                      else rs[0].get("accuracy_std", 0.0) if key == "accuracy" else 0.0)
        for attack in ("loss", "lira"):  # sampling error of the mean AUC: independent audits per seed
            ses = [r[f"{attack}_auc_se"] for r in rs if r.get(f"{attack}_auc_se") is not None]
            if ses:
                item[f"{attack}_auc_se"] = math.sqrt(sum(se * se for se in ses)) / len(ses)
        out.append(item)
    return out


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _auc(s: dict[str, Any], attack: str) -> str:
    se = s.get(f"{attack}_auc_se")
    return _fmt(s.get(f"{attack}_auc")) + (f" ± {se:.3f}" if se is not None else "")


def audit_table(summ: list[dict[str, Any]]) -> str:
    """Markdown table: method, epsilon, accuracy, and each attack's AUC / TPR@1%FPR / eps lower bound.

    An AUC reads ``mean ± SE``: the mean over seeds and the standard error of that mean from
    the audited sample sizes (a release that ignores membership has AUC 0.5 ± SE)."""
    lines = ["| method | target ε | ε spent | test acc (%) | loss AUC ± SE | loss TPR@1%FPR | LiRA AUC ± SE "
             "| LiRA TPR@1%FPR | ε lower bound (best attack) |", "|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(summ, key=lambda s: (s["method"], math.inf if s["target_epsilon"] is None
                                         else s["target_epsilon"])):
        eps = "no DP" if s["target_epsilon"] is None else f"{s['target_epsilon']:g}"
        lb = max(s.get("loss_eps_lower_bound", 0.0), s.get("lira_eps_lower_bound", 0.0))
        lines.append(f"| {s['method']} | {eps} | {_fmt(s.get('epsilon'))} | {_fmt(s.get('accuracy'), True)} ± "
                     f"{_fmt(s.get('accuracy_std'), True)} | {_auc(s, 'loss')} | "
                     f"{_fmt(s.get('loss_tpr_at_1fpr'))} | {_auc(s, 'lira')} | "
                     f"{_fmt(s.get('lira_tpr_at_1fpr'))} | {lb:.2f} |")
    return "\n".join(lines) + "\n"


def plot_privacy_utility(summ: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Test accuracy against epsilon (log axis), one line per method, non-DP dashed, error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({s["method"] for s in summ})
    dashes = [(0, (5, 3)), (0, (2, 2)), (0, (8, 3, 2, 3)), (0, (1, 1))]  # non-DP lines that coincide stay visible
    for i, m in enumerate(methods):
        color = f"C{i}"
        dp = sorted((s for s in summ if s["method"] == m and s["target_epsilon"] is not None),
                    key=lambda s: s["target_epsilon"])
        if dp:
            ax.errorbar([s["target_epsilon"] for s in dp], [s["accuracy"] for s in dp],
                        yerr=[s.get("accuracy_std", 0.0) for s in dp], marker="o", capsize=3, color=color,
                        label=f"{m} (DP)")
        for s in summ:
            if s["method"] == m and s["target_epsilon"] is None:
                ax.axhline(s["accuracy"], ls=dashes[i % len(dashes)], color=color, label=f"{m} (no DP)")
    ax.set_xscale("log")
    eps = sorted({s["target_epsilon"] for s in summ if s["target_epsilon"] is not None})
    if eps:
        ax.set_xticks(eps)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ε (δ fixed)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(folder: Path, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """Write results.csv, metrics.json (with the summary), privacy_utility.png and audit.md."""
    from fedcl.runs import write_json

    folder = Path(folder)
    keys = [k for k in rows[0] if k != "privacy"] if rows else []
    for r in rows[1:]:
        keys += [k for k in r if k not in keys and k != "privacy"]
    with (folder / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    summ = summary(rows)
    write_json(folder / "metrics.json", {**metrics, "summary": summ})
    plot_privacy_utility(summ, folder / "privacy_utility.png", f"{metrics.get('dataset', '')}: privacy vs utility")
    (folder / "audit.md").write_text(audit_table(summ))
