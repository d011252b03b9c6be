"""Issue 2's distillation benchmark: accuracy tables, seconds per iteration, accuracy-vs-time curve.

Parts run separately and merge into one results file (``experiments/results/distill.{json,md}``)::

    python experiments/bench_distill.py --part speed
    python experiments/bench_distill.py --part digits
    python experiments/bench_distill.py --part mnist --iterations dm=2000,dsa=200,gm=200
    python experiments/bench_distill.py --part curve --budget 1200
    python experiments/bench_distill.py --part speed --device cuda   # GPU figures, kept as speed_gpu

Every part takes ``--device`` (cpu by default; ``cuda``/``auto`` for a GPU). A part run on a GPU is
stored under its own key (``speed_gpu``, ``mnist_gpu``, ``curve_gpu``) so CPU and GPU figures sit side by side.

Every figure is measured when the part runs; nothing is copied from elsewhere. Timings on a
shared CPU are noisy: the speed part times engines back to back in one process and
reports median and minimum over iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedcl import load_dataset
from fedcl.distill import create_distiller
from fedcl.distill.synthetic import SyntheticSet
from fedcl.evaluate import evaluate_synthetic
from fedcl.models.fast import resolve_precision
from fedcl.utils import resolve_device

RESULTS = Path(__file__).parent / "results"
METHODS_MNIST = ("dsa", "dm", "gm", "herding", "kcenter", "random")


def environment(device: str) -> dict[str, Any]:
    """The device the part ran on, CPU model, threads, load and package versions, for the results file."""
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numpy
    import torchvision

    import fedcl

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None  # a CPU run on a GPU host: None
    return {"device": device, "gpu": gpu, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
            "amx": resolve_precision("auto", torch.device("cpu")) == torch.bfloat16,
            "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "fedcl": fedcl.__version__, "python": platform.python_version()}


def _sync(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock stamp covers the work it is meant to time."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def distill(method: str, data: Any, ipc: int, iterations: int, seed: int = 0, callback: Any = None,
            device: str = "cpu", **cfg: Any) -> tuple[SyntheticSet, dict[str, float]]:
    """Run one engine; returns the set and its timing stats."""
    opts: dict[str, Any] = {"device": device, "seed": seed, "progress": False, **cfg}
    if method not in ("random", "herding", "kcenter"):
        opts["iterations"] = iterations
    eng = create_distiller(method, **opts)
    syn = eng.distill(data.train_images, data.train_labels, ipc, num_classes=data.num_classes,
                      meta={"dataset": data.name}, callback=callback)
    return syn, dict(eng.stats)


def evaluate(syn: SyntheticSet, data: Any, n_models: int, epochs: int, device: str = "cpu") -> dict[str, float]:
    """Mean/std test accuracy (fractions) of ``n_models`` fresh ConvNets trained on ``syn``."""
    res = evaluate_synthetic(syn, data, n_models=n_models, epochs=epochs, device=device)
    return {"mean": res.mean, "std": res.std, "n_models": len(res.accuracies), "epochs": epochs}


def accuracy_table(data: Any, methods: tuple[str, ...], ipcs: tuple[int, ...], iters: dict[str, int],
                   n_models: int, epochs: int, batch_real: int, save_dir: Path | None = None,
                   device: str = "cpu") -> list[dict[str, Any]]:
    """Distill and evaluate every (method, ipc); prints rows as they come."""
    rows = []
    for ipc in ipcs:
        for method in methods:
            cfg = {"batch_real": batch_real} if method in ("dm", "dsa", "gm") else {}
            syn, stats = distill(method, data, ipc, iters.get(method, 0), device=device, **cfg)
            if save_dir is not None:  # kept so the set can be re-evaluated (e.g. with fedcl evaluate)
                save_dir.mkdir(parents=True, exist_ok=True)
                syn.save(save_dir / f"{data.name}_{method}_ipc{ipc}_it{iters.get(method, 0)}.safetensors")
            acc = evaluate(syn, data, n_models, epochs, device)
            row = {"dataset": data.name, "method": method, "ipc": ipc, "iterations": iters.get(method, 0)
                   if method in ("dm", "dsa", "gm") else 0, "batch_real": cfg.get("batch_real"),
                   "distill_seconds": stats.get("distill_seconds"), "acc": acc}
            print(f"{data.name:7s} {method:8s} ipc {ipc:3d} it {row['iterations']:5d} "
                  f"acc {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}  ({stats.get('distill_seconds', 0):.0f} s)",
                  flush=True)
            rows.append(row)
    return rows


#: per engine, the options of its timed runs beyond the variant's (batch_real=256 is dm/dsa/gm's; the others
#: keep their defaults: kip/frepo 128 real images per class, mtt's experts 256 images per step)
SPEED_ITERS = {"dsa": 2, "gm": 2, "mtt": 4, "kip": 4, "frepo": 4}


def _rss_mb() -> float:
    """This process's resident set now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _speed_run(method: str, cfg: dict[str, Any], iterations: int, device: str, root: str,
               threads: int) -> dict[str, Any]:
    """One timed run in a fresh process: per-iteration (wall, CPU) stamps and the run's peak memory."""
    import resource

    if threads:
        torch.set_num_threads(threads)
    data = load_dataset("mnist", root)
    base = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    stamps: list[tuple[float, float]] = []
    t0 = [(time.perf_counter(), time.process_time())]

    def cb(it: int, _syn: SyntheticSet) -> None:
        _sync(device)
        stamps.append((time.perf_counter() - t0[0][0], time.process_time() - t0[0][1]))
        t0[0] = (time.perf_counter(), time.process_time())

    _sync(device)
    t0[0] = (time.perf_counter(), time.process_time())
    _, stats = distill(method, data, 10, iterations, callback=cb, device=device, **cfg)
    return {"stamps": stamps, "base_rss_mb": base, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else None,
            "experts_seconds": stats.get("experts_seconds")}


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration and peak memory of each engine on MNIST-6k ipc 10, engines timed back to back.

    Each run is a fresh process (so its peak resident set is its own: ``ru_maxrss``, beside the
    resident set after loading the data; on CUDA also ``torch.cuda.max_memory_allocated``).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    big = {"batch_real": 256}
    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("dm", "dm (fast fp32, default)", {"fast_embed": True, **big}),  # the default on CPU
        ("dm", "dm (fast fp32, unchunked)", {"fast_embed": True, "embed_chunk": None, **big}),
        ("dm", "dm (fast fp32, chunks of 32)", {"fast_embed": True, "embed_chunk": 32, **big}),
        ("dm", "dm (before: net.embed fp32)", {"fast_embed": False, **big}),  # the default on CUDA
        ("dm", "dm (fast bf16)", {"fast_embed": True, "precision": "bf16", **big}),
        ("dsa", "dsa", big),
        ("gm", "gm", big),
        ("mtt", "mtt (2 experts, 20 student steps, unrolled)", {"num_experts": 2}),
        ("mtt", "mtt (2 experts, 20 student steps, tesla)", {"num_experts": 2, "tesla": True}),
        ("kip", "kip (2 random ConvNets per iteration)", {"n_models": 2}),
        ("frepo", "frepo", {}),
    ]
    engines = set(args.engines.split(","))
    variants = [v for v in variants if v[0] in engines]
    iters = {"dm": args.speed_iters, **SPEED_ITERS}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for _, label, _ in variants}
    for r in range(args.rounds):  # rounds interleave the variants so contention hits all alike
        # and rotate their order: the variant timed first in a round ran slower, whichever it was
        for method, label, cfg in variants[r % len(variants):] + variants[:r % len(variants)]:
            if method in ("dsa", "gm") and r >= args.slow_rounds:
                continue  # gm/dsa iterations take minutes: fewer rounds
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                run = pool.submit(_speed_run, method, cfg, iters[method], args.device, args.root,
                                  args.threads).result()
            runs[label].append(run)
            wall = [w for x in runs[label] for w, _ in (x["stamps"][1:] or x["stamps"])]  # first iteration warms up
            print(f"{label:45s} {statistics.median(wall):.3f} s/it wall so far, peak RSS {run['peak_rss_mb']:.0f} MB",
                  flush=True)
    rows = []
    for label, rs in runs.items():
        if not rs:
            continue
        stamps = [st for x in rs for st in (x["stamps"][1:] or x["stamps"])]
        cuda = [x["cuda_peak_mb"] for x in rs if x["cuda_peak_mb"] is not None]
        rows.append({"engine": label, "median_s": statistics.median(w for w, _ in stamps),
                     "min_s": min(w for w, _ in stamps), "cpu_median_s": statistics.median(c for _, c in stamps),
                     "n": len(stamps), "threads": args.threads or torch.get_num_threads(),
                     "load_avg_1m": os.getloadavg()[0], "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                     "base_rss_mb": min(x["base_rss_mb"] for x in rs), "cuda_peak_mb": max(cuda) if cuda else None})
    return {"rows": rows, "batch_real": 256, "ipc": 10, "env": environment(args.device)}


def part_digits(args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset("digits")
    iters = {"dm": args.digits_dm_iters, "dsa": args.digits_dsa_iters}
    rows = accuracy_table(data, ("dm", "dsa", "random"), (1, 10), iters, 5, args.epochs, 256, device=args.device)
    return {"rows": rows, "env": environment(args.device)}


def part_mnist(args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset("mnist", args.root)
    iters = dict(kv.split("=") for kv in args.iterations.split(","))
    iters = {k: int(v) for k, v in iters.items()}
    methods = tuple(m for m in args.methods.split(",") if m)
    rows = accuracy_table(data, methods, tuple(int(i) for i in args.ipcs.split(",")), iters, args.models,
                          args.epochs, args.batch_real, RESULTS / "distill_sets" if args.save_sets else None,
                          device=args.device)
    return {"rows": rows, "env": environment(args.device)}


def part_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The whole training set under the same evaluation: what no set of ``ipc`` images per class can beat
    by much, so it bounds the room above ``random`` (stored beside the dataset's accuracy table)."""
    data = load_dataset(args.dataset, args.root)  # digits ignores the root
    whole = SyntheticSet(data.train_images, data.train_labels, data.num_classes, {"method": "whole", "dataset": data.name})
    t0 = time.perf_counter()
    acc = evaluate(whole, data, args.models, args.epochs, args.device)
    print(f"{data.name}: whole training set ({len(whole)} images) acc {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"dataset": args.dataset, "images": len(whole), "acc": acc, "env": environment(args.device)}


def part_curve(args: argparse.Namespace) -> dict[str, Any]:
    """dm on MNIST ipc 10: accuracy of a cheap evaluation every K iterations against distill time."""
    data = load_dataset("mnist", args.root)
    points: list[dict[str, float]] = []
    clock = {"distill": 0.0, "t0": time.perf_counter()}

    def cb(it: int, syn: SyntheticSet) -> None:
        _sync(args.device)
        clock["distill"] += time.perf_counter() - clock["t0"]
        if it % args.every == 0 or it == args.curve_iters:
            acc = evaluate(syn, data, args.curve_models, args.curve_epochs, args.device)
            points.append({"iteration": it, "seconds": clock["distill"], "acc": acc["mean"], "std": acc["std"]})
            print(f"curve it {it:5d} {clock['distill']:7.1f} s acc {100 * acc['mean']:.2f}", flush=True)
            _save(_key("curve", args.device), {"points": points, "partial": True, "env": environment(args.device)})
        _sync(args.device)
        clock["t0"] = time.perf_counter()  # evaluation time is excluded

    syn0, _ = distill("random", data, 10, 0)
    acc0 = evaluate(syn0, data, args.curve_models, args.curve_epochs, args.device)
    points.append({"iteration": 0, "seconds": 0.0, "acc": acc0["mean"], "std": acc0["std"]})
    _sync(args.device)
    clock["t0"] = time.perf_counter()
    syn, _ = distill("dm", data, 10, args.curve_iters, callback=cb, batch_real=args.batch_real, device=args.device)
    final = evaluate(syn, data, 5, args.epochs, args.device)
    return {"points": points, "final": final, "iterations": args.curve_iters, "batch_real": args.batch_real,
            "eval": f"{args.curve_models} models x {args.curve_epochs} epochs", "env": environment(args.device)}


def _key(part: str, device: str) -> str:
    """The results key of a part: GPU runs keep their own (``mnist_gpu``), beside the CPU figures."""
    return f"{part}_gpu" if device.startswith("cuda") else part


def _save(part: str, result: dict[str, Any]) -> None:
    """Merge ``result`` into distill.json and rewrite distill.md (and the curve plot)."""
    from distill_report import write_report  # the sibling module (experiments/ is on sys.path)

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "distill.json"
    allres = json.loads(path.read_text()) if path.exists() else {}
    base = part.removesuffix("_gpu")
    if base == "speed" and part in allres:
        new_engines = {r["engine"] for r in result["rows"]}
        result["rows"] = [r for r in allres[part]["rows"] if r["engine"] not in new_engines] + result["rows"]
    if base == "ceiling":  # kept with the dataset's table: {digits|mnist: {..., "ceiling": result}}
        part = result.pop("dataset") + part[len(base):]
        result = {**allres.get(part, {"rows": [], "env": result["env"]}), "ceiling": result}
    elif base in ("digits", "mnist") and part in allres:
        # parts may run as several processes (e.g. one per method): keep other rows, replace same ones
        new = {(r["method"], r["ipc"]) for r in result["rows"]}
        result["rows"] = [r for r in allres[part]["rows"] if (r["method"], r["ipc"]) not in new] + result["rows"]
        result["commands"] = sorted(set(allres[part].get("commands", [])) | {result.get("command", "")})
        if "ceiling" in allres[part]:
            result["ceiling"] = allres[part]["ceiling"]
    allres[part] = result
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(allres, indent=1))
    tmp.replace(path)
    write_report(allres, RESULTS)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("speed", "digits", "mnist", "curve", "ceiling"), required=True)
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits", help="ceiling part: which dataset")
    p.add_argument("--root", default="/work/shared/data")
    p.add_argument("--epochs", type=int, default=300, help="evaluation epochs")
    p.add_argument("--models", type=int, default=5, help="evaluation models (mnist)")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--speed-iters", type=int, default=4)
    p.add_argument("--slow-rounds", type=int, default=1, help="rounds for gm and dsa")
    p.add_argument("--engines", default="dm,dsa,gm", help="speed part: engines to time (dm, dsa, gm, mtt, kip, frepo)")
    p.add_argument("--digits-dm-iters", type=int, default=1000)
    p.add_argument("--digits-dsa-iters", type=int, default=200)
    p.add_argument("--methods", default=",".join(METHODS_MNIST))
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--iterations", default="dm=1000,dsa=100,gm=100")
    p.add_argument("--curve-iters", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--curve-models", type=int, default=2)
    p.add_argument("--curve-epochs", type=int, default=150)
    p.add_argument("--save-sets", action="store_true", help="mnist part: save each set under results/distill_sets")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto; GPU results get their own keys")
    args = p.parse_args(argv)
    args.device = str(resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = {"speed": part_speed, "digits": part_digits, "mnist": part_mnist, "curve": part_curve,
             "ceiling": part_ceiling}
    result = parts[args.part](args)
    result["command"] = "python experiments/bench_distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    _save(_key(args.part, args.device), result)


if __name__ == "__main__":
    main()
