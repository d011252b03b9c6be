"""Write experiments/results/privacy.md from the sweep run folders (MNIST-6k and digits).

    .venv/bin/python experiments/privacy_results.py

Reads experiments/results/privacy_mnist/metrics.json and privacy_digits/metrics.json (each
optional), checks the issue's targets against the measured numbers, and writes the tables,
the device and the package versions. Nothing here is hard-coded: a missing run is reported
as missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedcl.privacy.report import audit_table

RESULTS = Path(__file__).resolve().parent / "results"
# The run folders' metrics.json do not record the device or the versions, and this script only renders
# them: these are the ones written beside the runs when they were made. A new run updates them.
RUN_VERSIONS = "Python 3.11.7, torch 2.15.0, opacus 1.6.0, fedcl 0.1.0"


def _load(name: str) -> dict | None:
    """The run folder ``name``'s metrics, with the summaries of its parts (``name_*`` folders) merged in.

    A study may be split into parallel runs (e.g. ``privacy_mnist`` for dm and
    ``privacy_mnist_dpsgd`` for the baseline); each part keeps its own config.yaml.
    """
    p = RESULTS / name / "metrics.json"
    if not p.is_file():
        return None
    m = json.loads(p.read_text())
    m["parts"] = [name]
    for part in sorted(RESULTS.glob(f"{name}_*/metrics.json")):
        extra = json.loads(part.read_text())
        m["summary"] = m["summary"] + extra["summary"]
        m["parts"].append(part.parent.name)
        m["part_minutes"] = {**m.get("part_minutes", {name: m["total_seconds"] / 60}),
                             part.parent.name: extra["total_seconds"] / 60}
    return m


def _get(summ: list[dict], method: str, eps: float | None) -> dict | None:
    return next((s for s in summ if s["method"] == method and s["target_epsilon"] == eps), None)


def _checks(summ: list[dict]) -> list[str]:
    out = []
    dm, dm8, dm1 = _get(summ, "dm", None), _get(summ, "dm", 8.0), _get(summ, "dm", 1.0)
    sgd1 = _get(summ, "dpsgd", 1.0)
    if dm and dm8:
        gap = 100 * (dm["accuracy"] - dm8["accuracy"])
        out.append(f"- ε = 8: DP dm {100 * dm8['accuracy']:.1f}% vs non-DP dm {100 * dm['accuracy']:.1f}% "
                   f"(gap {gap:.1f} points; target ≤ 3): **{'met' if gap <= 3 else 'not met'}**")
    if dm1:
        line = f"- ε = 1: DP dm {100 * dm1['accuracy']:.1f}% (target ≥ 85%): **{'met' if dm1['accuracy'] >= 0.85 else 'not met'}**"
        if sgd1:
            line += f"; DP-SGD at ε = 1: {100 * sgd1['accuracy']:.1f}%"
        out.append(line)
    if any(s and "loss_auc" in s for s in (dm1, dm8)):  # 500 members per seed: too few to settle 0.02
        out.append("- audit: checked on the larger audit run (`privacy_audit_mnist`, next section)")
    return out


def _audit_checks(summ: list[dict]) -> list[str]:
    """The issue's audit target, attack by attack: DP dm AUC within 0.02 of 0.5, and below the
    non-DP dm set's and the real-data model's AUC (with the standard errors of the means)."""
    out = []
    dm, real = _get(summ, "dm", None), _get(summ, "real", None) or _get(summ, "dpsgd", None)
    for s in (_get(summ, "dm", 1.0), _get(summ, "dm", 8.0)):
        if not s:
            continue
        for attack in ("loss", "lira"):
            a, se = s.get(f"{attack}_auc"), s.get(f"{attack}_auc_se")
            if a is None:
                continue
            refs = [(name, r.get(f"{attack}_auc"), r.get(f"{attack}_auc_se")) for name, r in
                    (("non-DP dm", dm), ("real-data model", real)) if r and r.get(f"{attack}_auc") is not None]
            cmp = "; ".join(f"{'below' if a < ra else 'not below'} {name} {ra:.3f} ± {rse or 0:.3f}"
                            for name, ra, rse in refs)
            gap = abs(a - 0.5)
            margin = abs(0.02 - gap)
            close = (f"; the margin, {margin:.4f}, is inside one standard error: the true AUC may lie on "
                     "either side of the bound" if se and margin < se else "")
            out.append(f"- DP dm ε = {s['target_epsilon']:g}, {attack} attack: AUC {a:.4f} ± {se or 0:.3f} "
                       f"(|AUC − 0.5| = {gap:.4f}, target ≤ 0.02: "
                       f"**{'met' if gap <= 0.02 else 'not met'}**{close}); {cmp}")
    return out


def _per_seed_spread(m: dict) -> list[str]:
    """One line per seed: the audited n and the range of each attack's AUC over the seed's rows."""
    rows, out = m.get("rows", []), []
    n = m["config"].get("audit_members")
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        parts = []
        for attack in ("loss", "lira"):
            aucs = [r[f"{attack}_auc"] for r in mine if r.get(f"{attack}_auc") is not None]
            if aucs:
                parts.append(f"{attack} AUC {min(aucs):.3f} to {max(aucs):.3f}")
        size = mine[0].get("train_size")
        held = m["train_size"] - size if size is not None else n
        if parts:
            out.append(f"- seed {seed} ({held} members vs {held} held-out non-members; releases use {size} "
                       f"training images): " + ", ".join(parts))
    return out


def main() -> int:
    lines = ["# Differential privacy: measured results", "",
             "One current table per question, each from its run folder (config.yaml, metrics.json); earlier runs "
             "are in git.", "",
             "Device: CPU (2 cores visible; each run shared them with other jobs, so its wall time is an upper "
             f"bound). {RUN_VERSIONS}.", "",
             "Audit protocol: members are training examples the release used, non-members are training examples "
             "held out of it (`audit_members` of each, at most a fifth of the training set, so each release of "
             "an audited sweep uses the rest: `train_size` in results.csv); the LiRA-style attack is calibrated "
             "on shadow models (trained on the test set, which holds no audited example). All rows of one seed share "
             "the same audited examples, so their AUCs differ by the release, not by the draw; the draw itself moves "
             "every AUC of a seed together. A release that ignores membership has AUC 0.5 up to sampling noise: "
             "AUCs read mean ± the standard error of that mean (Hanley-McNeil; 0.018 for one seed of 500 members "
             "and 500 non-members, 0.012 for 1,200 each, 0.008, 0.007 and 0.005 for the mean of two, three and five such seeds).", "",
             "All accuracies are test accuracies measured here (fractions in metrics.json, percent below). "
             "Published figures for reference (full MNIST, not comparable settings): Opacus DP-SGD 94.6% at ε = 1.19; "
             "DP distribution matching (NDPDC) 93.1% at ipc 10, ε = 1.", ""]
    for name, title in (("privacy_mnist", "MNIST-6k (6,000 training images, official 10k test set)"),
                        ("privacy_audit_mnist", "MNIST-6k audit: 1,200 members per seed, shadows from the "
                                                "target's own pipeline"),
                        ("privacy_digits", "digits (bundled sklearn 8x8)")):
        m = _load(name)
        lines += [f"## {title}", ""]
        if m is None:
            lines += [f"Not available: `experiments/results/{name}/metrics.json` was not produced (yet)."]
            log = RESULTS / f"{name}.log"
            done = [ln for ln in log.read_text().splitlines() if " eps=" in ln] if log.is_file() else []
            if done:
                lines += ["Rows completed so far, from the run's log (accuracy is a fraction; one seed):", "",
                          "```", *done, "```"]
            lines.append("")
            continue
        cfg = m["config"]
        lines += [f"Run folder: `experiments/results/{name}/` (config.yaml has every setting). ipc {cfg['ipc']}, "
                  f"ConvNet width {cfg['width']}, δ = {cfg['privacy']['delta']:g}, max_grad_norm "
                  f"{cfg['privacy']['max_grad_norm']}, seeds {cfg['seeds']}, dm iterations {cfg['iterations']} "
                  f"(batch_real {cfg['batch_real']}; DP: {cfg['privacy'].get('replay', 0)} replay passes, "
                  f"normalize {cfg['privacy'].get('normalize', False)}, center {cfg['privacy'].get('center', False)}), "
                  f"evaluation: {cfg['eval']['models']} models x {cfg['eval']['epochs']} epochs. "
                  + (f"Wall time summed over its {len(m['merged_from'])} processes (one per seed): "
                     if m.get("merged_from") else "Total wall time ")
                  + f"{m['total_seconds'] / 60:.1f} min"
                  f"{' (issue: under 10 minutes on a 2-core CPU)' if name == 'privacy_digits' else ''}.", "",
                  *(["Run in parallel parts (same settings unless their config.yaml says otherwise): "
                     + ", ".join(f"`{k}/` ({v:.1f} min wall)" for k, v in m["part_minutes"].items()), ""]
                    if len(m["parts"]) > 1 else []),
                  f"Audit: {cfg['audit_members']} members and as many held-out non-members per seed; LiRA shadows: "
                  + ("made by each target's own pipeline (same method and ε, same training) on test-set samples of "
                     f"the release's size, at least {cfg['audit_shadows']} models per target"
                     if cfg.get("audit_shadow_pipeline") else
                     f"{cfg['audit_shadows']} models trained on {cfg['audit_shadow_size']} test images")
                  + (f"; `real` = the ConvNet trained on the real data without DP for {cfg.get('real_epochs')} epochs"
                     if "real" in cfg["methods"] else "") + ".", "",
                  *(["One process per seed, merged by `experiments/merge_sweeps.py` from "
                     + ", ".join(f"`{Path(x).name}/`" for x in m["merged_from"]) + ".", ""]
                    if m.get("merged_from") else []),
                  "± is the std over seeds, or over evaluation models when there is one seed; for AUCs, the "
                  "standard error of the mean (above).", "",
                  audit_table(m["summary"]), f"![privacy/utility]({name}/privacy_utility.png)", ""]
        running = [(log.stem, [ln for ln in log.read_text().splitlines() if " eps=" in ln])
                   for log in sorted(RESULTS.glob(f"{name}_*.log")) if not (RESULTS / log.stem / "metrics.json").is_file()]
        for part, done in running:
            lines += [f"Part `{part}/` had not finished when this file was written; rows completed so far, from "
                      f"its log (accuracy is a fraction; one seed; not in the table or the checks):", "", "```",
                      *(done or ["(none yet)"]), "```", ""]
        spread = _per_seed_spread(m)
        if spread:
            lines += ["Per seed, over every row of the table (each seed audits its own draw of members and "
                      "non-members, shared by its rows):", "", *spread, ""]
        # the targets are on MNIST: accuracy from the sweep, the audit from the audit run
        checks = (_checks(m["summary"]) if name == "privacy_mnist" else
                  _audit_checks(m["summary"]) if name == "privacy_audit_mnist" else [])
        if checks:
            lines += ["Targets of the issue, checked on these numbers:", "", *checks, ""]
    (RESULTS / "privacy.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
