"""``fedcl continual [CONFIG.yaml] [key=value ...]``: compare replay strategies on one benchmark.

Writes one run folder: ``config.yaml``, ``metrics.json`` (per strategy: final average
accuracy and forgetting as mean ± std over seeds, seconds distilling per experience, and
each seed's accuracy matrix; for synthesising strategies run beside ``distilled_random`` or
``distilled_herding``, ``gain_over_selection``), ``results.md``, ``accuracy_matrix.png``, the final
learner (``learner.safetensors``) and a distilled strategy's memory (``memory.safetensors``, a
synthetic set); with several strategies or seeds ``learners/<strategy>[-seed<k>].safetensors`` and
``memories/...`` (see :mod:`fedcl.models.saved`).
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import torch

from fedcl.config import load_config
from fedcl.continual.benchmarks import list_benchmarks, make_benchmark
from fedcl.continual.config import ContinualConfig
from fedcl.continual.report import add_selection_gains, plot_accuracy_matrices, results_table
from fedcl.continual.runner import SELECTION_BASELINES, check_strategies, run_strategy, synthesising_strategies
from fedcl.errors import ConfigError
from fedcl.models.saved import artifact_paths
from fedcl.runs import final_path, run_folder, save_config, write_json

__all__ = ["main", "run"]


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def _per_exp_mean(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [statistics.fmean(col) for col in zip(*(r[key] for r in runs))]


def validate(cfg: ContinualConfig) -> None:
    """Every check that can fail before the data is loaded."""
    if cfg.benchmark not in list_benchmarks():
        raise ConfigError(f"unknown benchmark {cfg.benchmark!r}; valid: {', '.join(list_benchmarks())}")
    check_strategies(cfg)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("epochs and batch_size must be at least 1")


def run(cfg: ContinualConfig, log: Any = print) -> dict[str, Any]:
    """Run every strategy for every seed; returns the metrics dict (also written to the run folder)."""
    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    benches = {seed: make_benchmark(cfg.benchmark, root=cfg.data.root, seed=seed, n_experiences=cfg.n_experiences,
                                    image_size=cfg.data.image_size, val_fraction=cfg.data.val_fraction,
                                    eval_split=cfg.eval.split)
               for seed in cfg.seeds}  # DataError here, before any training
    num_classes = next(iter(benches.values())).num_classes
    if cfg.mem_size < num_classes:
        raise ConfigError(f"mem_size={cfg.mem_size} is smaller than the {num_classes} classes of {cfg.benchmark}; "
                          f"use mem_size >= {num_classes}")
    if synthesising_strategies(list(cfg.strategies)):
        from fedcl.distill.memory import create_memory

        # a class's smallest share (at the end of the stream) must hold the memory: e.g. an idc factor that does not
        # divide the image size, or a haba budget too small for its hallucinators, fails here, before any training
        create_memory(cfg.distill.param, [0], cfg.mem_size // num_classes, next(iter(benches.values())).in_shape,
                      **dict(cfg.distill.param_kwargs))
    metrics: dict[str, Any] = {"config": {"benchmark": cfg.benchmark, "mem_size": cfg.mem_size, "seeds": list(cfg.seeds),
                                          "epochs": cfg.epochs, "model": cfg.model, "eval_split": cfg.eval.split,
                                          "distill": {"param": cfg.distill.param,
                                                      "param_kwargs": dict(cfg.distill.param_kwargs),
                                                      "param_selections": cfg.distill.param_selections}},
                               "strategies": {}}
    with run_folder(cfg.out, f"continual-{cfg.benchmark}") as folder:
        save_config(folder, cfg)
        for name in cfg.strategies:
            runs = []
            for seed in cfg.seeds:
                saved = artifact_paths(folder, name, cfg.strategies, "learner", "memory", seed=seed, seeds=cfg.seeds)
                r = run_strategy(cfg, benches[seed], name, seed, save_to=(saved[0], saved[1]))
                log(f"{name} seed {seed}: final accuracy {r['final_accuracy']:.3f}, forgetting {r['forgetting']:.3f}, "
                    f"distill {sum(r['distill_seconds_per_experience']):.1f}s, train {sum(r['train_seconds_per_experience']):.1f}s")
                runs.append({"seed": seed, **r})
            metrics["strategies"][name] = {
                "final_accuracy": _mean_std([r["final_accuracy"] for r in runs]),
                "forgetting": _mean_std([r["forgetting"] for r in runs]),
                "distill_seconds_per_experience": _per_exp_mean(runs, "distill_seconds_per_experience"),
                "train_seconds_per_experience": _per_exp_mean(runs, "train_seconds_per_experience"),
                "runs": runs,
            }
        add_selection_gains(metrics, synthesising_strategies(list(cfg.strategies)), SELECTION_BASELINES)
        write_json(folder / "metrics.json", metrics)
        (folder / "results.md").write_text(results_table(metrics))
        plot_accuracy_matrices(metrics, folder / "accuracy_matrix.png")
    metrics["folder"] = str(final_path(folder))
    return metrics


def main(argv: list[str]) -> int:
    """Entry point of ``fedcl continual``; FedclErrors propagate to the CLI (one line, exit 2)."""
    cfg = load_config(ContinualConfig, argv)
    metrics = run(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(results_table(metrics), end="")
    print(f"run folder: {metrics['folder']}")
    return 0
