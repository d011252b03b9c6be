"""DP utility at epsilon 1 and 10: DP dm, DP dsa, DP mtt (DP-SGD experts) and DP-SGD, each tuned on validation data only.

For one dataset (MNIST-6k or Fashion-MNIST), this runs ``fedcl privacy-sweep`` twice over:

1. **selection** (``eval.split=val``): for every method and epsilon, each value of the method's
   main knob (``TUNE``) on seed 0, scored on a validation split held out of the training data
   (``data.val_fraction``); the test set is not read;
2. **report** (``eval.split=test``): the chosen value per (method, epsilon), on seeds 0-2,
   scored once on the official test set. The training data (everything but the validation
   split) is the same in both stages.

Each stage's run folders go under ``OUT/{select,report}/...``; the table goes to
``experiments/results/dp_utility_DATASET.md`` with the command, device and versions.

Usage::

    python experiments/dp_utility.py --dataset mnist --root ../shared/data
    python experiments/dp_utility.py --dataset fashion_mnist --root ../shared/data --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: per method, the knob that is chosen on validation data, and its candidate values
TUNE: dict[str, tuple[str, list[float]]] = {
    "dm": ("dp_lr_img", [30.0, 100.0, 300.0]),
    "dsa": ("gm_outer_loop", [2, 5]),
    "dpsgd": ("dpsgd_lr", [0.1, 0.3, 1.0]),
    # the experts' DP-SGD step size (plain SGD; DP-SGD's own lr above is with momentum 0.9)
    "mtt": ("engine.mtt.lr_teacher", [0.1, 0.3, 1.0]),
}

#: options of a method that stay only if they earn their place: each is scored on validation (seed 0) with
#: the knob at its chosen value, against the same run with the option as it is (``--checks``)
CHECKS: dict[str, dict[str, list[str]]] = {
    "dm": {"center=false": ["privacy.center=false"], "replay=0": ["privacy.replay=0"]},
}

#: settings of one method only (a CPU schedule: 2 DP-SGD experts x 4 epochs, 100 iterations of 10 student steps)
METHOD_BASE: dict[str, list[str]] = {
    "mtt": ["engine.mtt.num_experts=2", "engine.mtt.train_epochs=4", "engine.mtt.max_start_epoch=2",
            "engine.mtt.expert_epochs=2", "engine.mtt.syn_steps=10", "engine.mtt.cache_dir=runs/dp_utility/experts"],
}

# settings every row shares (a 2-core CPU budget; width 32 as the MNIST-6k study of privacy.md)
BASE = ["ipc=10", "width=32", "iterations=100", "batch_real=64", "gm_iterations=10", "gm_inner_loop=10",
        "dpsgd_epochs=5", "dpsgd_batch_size=256", "audit=false", "nodp=false", "device=cpu", "threads=1",
        "eval.models=5", "eval.epochs=300", "data.val_fraction=0.1", "privacy.delta=1e-5"]


def sweep(dataset: str, root: str, method: str, eps: float, seeds: list[int], split: str, extra: list[str],
          out: Path) -> list[dict]:
    """One ``fedcl privacy-sweep`` run in process; returns its rows."""
    from fedcl.config import load_config
    from fedcl.privacy.sweep import SweepConfig, run_sweep

    argv = [f"dataset={dataset}", f"data.root={root}", f"methods=[{method}]", f"epsilons=[{eps}]",
            f"seeds=[{','.join(map(str, seeds))}]", f"eval.split={split}", *BASE, *METHOD_BASE.get(method, []), *extra]
    cfg = load_config(SweepConfig, argv)
    out.mkdir(parents=True, exist_ok=True)
    (out / "argv.json").write_text(json.dumps(argv))
    return run_sweep(cfg, out, log=lambda line: print(f"  {line}", flush=True))["rows"]


def write_table(args: argparse.Namespace, seeds: list[int], lines: list[dict], t0: float, done: bool) -> Path:
    """The results file of what has run so far (rewritten after every reported row)."""
    import torch

    import fedcl

    minutes = (time.time() - t0) / 60
    when = f"{minutes:.0f} min" if not args.from_lines else "rendered from the lines of the runs named in privacy.md"
    name = {"mnist": "MNIST-6k", "fashion_mnist": "Fashion-MNIST", "digits": "digits"}[args.dataset]
    status = "" if done else " (partial: the study was still running when this was written)"
    md = [f"## {name}: DP utility at ε = 1 and 10 (δ = 1e-5), ipc 10, ConvNet width 32",
          "",
          f"Command: `python experiments/dp_utility.py --dataset {args.dataset} --root {args.root}"
          f"{' --quick' if args.quick else ''} --seeds {args.seeds} --methods {args.methods}"
          f"{''.join(f' --values {v}' for v in args.values)}"
          f"{'' if args.epsilons == '1,10' else ' --epsilons ' + args.epsilons} --select-models {args.select_models}"
          f"{' --from-lines ' + ' '.join(args.from_lines) if args.from_lines else ''}` "
          f"({when}{status}). Device: CPU ({platform.processor() or platform.machine()}, 2 cores, one thread per "
          f"run). Versions: fedcl {fedcl.__version__}, torch {torch.__version__}, python {platform.python_version()}.",
          "",
          "Each method's knob was chosen on a validation split (10% of the training data, stratified, seed 0) "
          f"at seed 0 ({args.select_models} evaluation models per candidate); the test set was read once, for the reported figure, on seeds "
          f"{', '.join(map(str, seeds))}. The releases train on the other 90%.",
          "",
          "| method | ε | chosen on validation | val acc (%) | test acc (%) mean ± std over seeds | ε spent |",
          "|---|---|---|---|---|---|"]
    # the chosen value per (method, epsilon): the best validation score over every select line (a grid
    # widened by a later --select-only run included); only its report is shown
    best = chosen_knobs(lines)
    checks = [x for x in lines if x["stage"] == "check"]
    lines = [x for x in lines if x["stage"] != "check"]
    order = {m: i for i, m in enumerate(TUNE)}
    lines = sorted(lines, key=lambda x: (order[x["method"]], x["epsilon"], x[TUNE[x["method"]][0]]))
    for line in lines:
        knob = TUNE[line["method"]][0]
        if line["stage"] != "report" or line[knob] != best.get((line["method"], line["epsilon"]), (0, line[knob]))[1]:
            continue
        accs = line["test_accuracy"]
        sd = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        md.append(f"| {line['method']} | {line['epsilon']:g} | {knob}={line[knob]:g} | {100 * line['val_accuracy']:.1f} "
                  f"| {100 * statistics.fmean(accs):.1f} ± {100 * sd:.1f} | {max(line['epsilon_spent']):.3f} |")
    md += ["", "Candidates scored on validation (seed 0):", "",
           "| method | ε | value | val acc (%) |", "|---|---|---|---|"]
    for line in lines:
        if line["stage"] == "select":
            knob = TUNE[line["method"]][0]
            md.append(f"| {line['method']} | {line['epsilon']:g} | {knob}={line[knob]:g} | "
                      f"{100 * line['val_accuracy']:.1f} |")
    if checks:
        md += ["", "Options scored on validation (seed 0) at the chosen value, against the option as it is (an option "
               "that measured level left the code; its row stays here). Command: `python experiments/dp_utility.py "
               f"--dataset {args.dataset} --root {args.root} --methods {','.join(dict.fromkeys(x['method'] for x in checks))} "
               f"--epsilons {','.join(dict.fromkeys(format(x['epsilon'], 'g') for x in checks))} --select-models "
               f"{args.select_models} --checks --from-lines LINES.jsonl`:", "",
               "| method | ε | option | val acc (%) | with the option as it is (%) |", "|---|---|---|---|---|"]
        for x in checks:
            md.append(f"| {x['method']} | {x['epsilon']:g} | `privacy.{x['option']}` | "
                      f"{100 * x['val_accuracy']:.1f} | {100 * best[(x['method'], x['epsilon'])][0]:.1f} |")
    target = REPO / "experiments" / "results" / f"dp_utility_{args.dataset}{'_quick' if args.quick else ''}.md"
    target.write_text("\n".join(md) + "\n")
    return target


def chosen_knobs(lines: list[dict]) -> dict[tuple[str, float], tuple[float, float]]:
    """Per (method, epsilon), the (validation accuracy, value) of the best select line."""
    best: dict[tuple[str, float], tuple[float, float]] = {}
    for line in lines:
        if line["stage"] == "select":
            key, score = (line["method"], line["epsilon"]), (line["val_accuracy"], line[TUNE[line["method"]][0]])
            best[key] = max(best.get(key, score), score)
    return best


def run_checks(args: argparse.Namespace, methods: list[str], epsilons: list[float], lines: list[dict]) -> None:
    """Score ``CHECKS``' options on validation at the chosen knob; the lines are appended to ``lines`` and to
    the first ``--from-lines`` file (a line already there is not run again)."""
    best = chosen_knobs(lines)
    out = Path(args.out) / args.dataset
    for method in methods:
        knob = TUNE[method][0]
        for eps in epsilons:
            if (method, eps) not in best:
                raise SystemExit(f"--checks: no select lines for {method} at epsilon {eps:g} in --from-lines")
            value = best[(method, eps)][1]
            for option, overrides in CHECKS.get(method, {}).items():
                if any(x["stage"] == "check" and (x["method"], x["epsilon"], x["option"]) == (method, eps, option)
                       for x in lines):
                    continue
                print(f"check {method} eps={eps} {knob}={value:g} {option}", flush=True)
                rows = sweep(args.dataset, args.root, method, eps, [0], "val",
                             [f"{knob}={value:g}", f"eval.models={args.select_models}", *overrides],
                             out / "check" / f"{method}-eps{eps:g}-{option.replace('=', '')}")
                line = {"stage": "check", "method": method, "epsilon": eps, knob: value, "option": option,
                        "val_accuracy": rows[0]["accuracy"]}
                lines.append(line)
                with open(args.from_lines[0], "a") as f:
                    f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "digits"])
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--out", default="runs/dp_utility")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="dm,dsa,dpsgd")
    parser.add_argument("--values", action="append", default=[], metavar="METHOD=V1,V2",
                        help="the candidates of a method's knob (default: TUNE's), e.g. dm=100,300")
    parser.add_argument("--epsilons", default="1,10", help="the target epsilons (default 1,10)")
    parser.add_argument("--select-models", type=int, default=5, help="evaluation models per candidate")
    parser.add_argument("--select-only", action="store_true",
                        help="score the candidates on validation data and stop (to widen a grid: compare the lines "
                             "with the earlier ones, then report the winner with --values METHOD=V)")
    parser.add_argument("--checks", action="store_true",
                        help="score CHECKS' options on validation at each method's chosen knob (from --from-lines's "
                             "select lines) and stop")
    parser.add_argument("--quick", action="store_true", help="one candidate per knob, one seed, 1 eval model")
    parser.add_argument("--from-lines", nargs="+", default=None, metavar="LINES.jsonl",
                        help="run nothing: write the table from the lines.jsonl of earlier runs (e.g. one per method)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    epsilons = [float(e) for e in args.epsilons.split(",")]
    if args.from_lines:
        lines = [json.loads(row) for f in args.from_lines for row in Path(f).read_text().splitlines() if row.strip()]
        if args.checks:
            run_checks(args, methods, epsilons, lines)
        print(f"wrote {write_table(args, seeds, lines, time.time(), done=True)}")
        return
    for item in args.values:
        method, _, values = item.partition("=")
        TUNE[method] = (TUNE[method][0], [float(v) for v in values.split(",")])
    if args.quick:
        global BASE
        BASE = [b for b in BASE if not b.startswith("eval.")] + ["eval.models=1", "eval.epochs=50"]
        seeds = seeds[:1]
    out = Path(args.out) / args.dataset
    t0 = time.time()
    chosen: dict[tuple[str, float], tuple[float, float]] = {}
    lines = []
    for method in methods:
        knob, values = TUNE[method]
        values = values[:1] if args.quick else values
        for eps in epsilons:
            scores = []
            for v in values:
                print(f"select {method} eps={eps} {knob}={v}", flush=True)
                rows = sweep(args.dataset, args.root, method, eps, [0], "val",
                             [f"{knob}={v:g}", f"eval.models={args.select_models}"],
                             out / "select" / f"{method}-eps{eps:g}-{knob}{v:g}")
                scores.append((rows[0]["accuracy"], v))
                lines.append({"stage": "select", "method": method, "epsilon": eps, knob: v,
                              "val_accuracy": rows[0]["accuracy"]})
            (out / "lines.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
            if args.select_only:
                continue
            best_acc, best = max(scores)
            chosen[(method, eps)] = (best, best_acc)
            print(f"report {method} eps={eps} {knob}={best}", flush=True)
            rows = sweep(args.dataset, args.root, method, eps, seeds, "test", [f"{knob}={best:g}"],
                         out / "report" / f"{method}-eps{eps:g}")
            accs = [r["accuracy"] for r in rows]
            lines.append({"stage": "report", "method": method, "epsilon": eps, knob: best, "val_accuracy": best_acc,
                          "test_accuracy": accs, "epsilon_spent": [r["epsilon"] for r in rows],
                          "release_seconds": [r["release_seconds"] for r in rows]})
            (out / "lines.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
            write_table(args, seeds, lines, t0, done=False)
    if args.select_only:
        print(f"wrote {out / 'lines.jsonl'} (validation scores only)")
    else:
        print(f"wrote {write_table(args, seeds, lines, t0, done=True)}")


if __name__ == "__main__":
    main()
