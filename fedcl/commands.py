"""The core commands: ``fedcl distill`` and ``fedcl evaluate``."""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedcl import __version__
from fedcl.config import DataConfig, DistillConfig, EvalConfig, load_config
from fedcl.data import DATASETS, ImageData, check_eval_split, load_dataset_from_config
from fedcl.distill import DISTILLERS, SyntheticSet, create_distiller
from fedcl.evaluate import evaluate_synthetic
from fedcl.models import MODELS
from fedcl.report import markdown_table, save_grid
from fedcl.runs import final_path, run_folder, save_config, write_json
from fedcl.utils import resolve_device, seed_everything

__all__ = ["EvaluateConfig", "distill_main", "evaluate_main", "run_distill", "versions"]


def versions() -> dict[str, str]:
    """Versions of fedcl, python and torch (for results files)."""
    return {"fedcl": __version__, "python": platform.python_version(), "torch": torch.__version__}


def engine_options(cfg: DistillConfig) -> dict[str, Any]:
    """Keywords for :func:`create_distiller` from a :class:`DistillConfig` (None = engine default)."""
    opts: dict[str, Any] = {"model": cfg.model, "model_kwargs": dict(cfg.model_kwargs) or None, "seed": cfg.seed,
                            "device": cfg.device, "progress": cfg.progress, "iterations": cfg.iterations,
                            "lr_img": cfg.lr_img, "batch_real": cfg.batch_real, "dsa": cfg.dsa}
    if cfg.init != "real":
        opts["init"] = cfg.init
    opts.update(cfg.engine)
    return opts


def run_distill(cfg: DistillConfig, folder: Path, data: ImageData | None = None) -> dict[str, Any]:
    """Distill, save, draw and evaluate into ``folder``; return the metrics written."""
    seed_everything(cfg.seed)
    data = data or load_dataset_from_config(cfg.dataset, cfg.data)
    distiller = create_distiller(cfg.method, **engine_options(cfg))
    privacy = cfg.privacy if cfg.privacy.enabled else None
    meta = {"dataset": data.name, "mean": list(data.mean), "std": list(data.std)}
    syn = distiller.distill(data.train_images, data.train_labels, cfg.ipc, num_classes=data.num_classes,
                            privacy=privacy, meta=meta)
    syn.save(folder / "synthetic.safetensors")
    save_grid(syn, folder / "grid.png")
    result = evaluate_synthetic(syn, data.for_evaluation(cfg.eval.split), model=cfg.model,
                                n_models=cfg.eval.models, epochs=cfg.eval.epochs,
                                lr=cfg.eval.lr, batch_size=cfg.eval.batch_size, dsa=cfg.eval.dsa, seed=cfg.seed,
                                device=cfg.device, model_kwargs=dict(cfg.model_kwargs) or None)
    metrics = {
        "dataset": data.name, "method": cfg.method, "ipc": cfg.ipc, "model": cfg.model, "seed": cfg.seed,
        "iterations": distiller.iterations, "seconds_per_iteration": distiller.stats.get("seconds_per_iteration"),
        "distill_seconds": distiller.stats.get("distill_seconds"), "device": str(resolve_device(cfg.device)),
        "num_images": len(syn), f"{cfg.eval.split}_accuracy": result.as_dict(), "privacy": syn.meta.get("privacy"),
        "versions": versions(),
    }
    write_json(folder / "metrics.json", metrics)
    return metrics


def _check_names(cfg: DistillConfig) -> None:
    """Fail on unknown names before any data is read."""
    DATASETS.get(cfg.dataset)
    DISTILLERS.get(cfg.method)
    MODELS.get(cfg.model)
    check_eval_split(cfg.eval.split, cfg.data.val_fraction)


def distill_main(argv: list[str]) -> int:
    """``fedcl distill [CONFIG.yaml] [key=value ...]``."""
    cfg = load_config(DistillConfig, argv)
    _check_names(cfg)
    data = load_dataset_from_config(cfg.dataset, cfg.data)
    with run_folder(cfg.out, f"distill-{cfg.dataset}-{cfg.method}-ipc{cfg.ipc}") as tmp:
        save_config(tmp, cfg)
        m = run_distill(cfg, tmp, data)
    acc = m[f"{cfg.eval.split}_accuracy"]
    print(f"{cfg.method} on {cfg.dataset}, ipc {cfg.ipc}: {cfg.eval.split} accuracy {acc['mean']:.4f} "
          f"± {acc['std']:.4f} ({acc['n_models']} models); {m['distill_seconds']:.1f} s distilling -> {final_path(tmp)}")
    return 0


@dataclass
class EvaluateConfig:
    """``fedcl evaluate``: the dataset defaults to the one recorded in the synthetic set."""

    dataset: str | None = None
    models: list[str] = field(default_factory=lambda: ["convnet"])
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def evaluate_main(argv: list[str]) -> int:
    """``fedcl evaluate PATH/synthetic.safetensors [--model convnet,mlp] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="fedcl evaluate", description="Evaluate a saved synthetic set.")
    parser.add_argument("path", help="a synthetic.safetensors written by fedcl")
    parser.add_argument("--model", default=None, help="comma-separated architectures (default: convnet)")
    args, rest = parser.parse_known_args(argv)
    overrides = list(rest) + ([f"models=[{args.model}]"] if args.model else [])
    cfg = load_config(EvaluateConfig, overrides=overrides)
    for name in cfg.models:
        MODELS.get(name)
    check_eval_split(cfg.eval.split, cfg.data.val_fraction)
    syn = SyntheticSet.load(args.path)
    dataset = cfg.dataset or syn.meta.get("dataset")
    if not dataset:
        from fedcl.errors import ConfigError

        raise ConfigError(f"{args.path} records no dataset; pass dataset=NAME")
    data = load_dataset_from_config(dataset, cfg.data).for_evaluation(cfg.eval.split)
    rows, results = [], {}
    for name in cfg.models:
        r = evaluate_synthetic(syn, data, model=name, n_models=cfg.eval.models, epochs=cfg.eval.epochs,
                               lr=cfg.eval.lr, batch_size=cfg.eval.batch_size, dsa=cfg.eval.dsa, seed=cfg.seed,
                               device=cfg.device)
        results[name] = r.as_dict()
        rows.append([name, f"{r.mean:.4f} ± {r.std:.4f}", len(r.accuracies)])
    table = markdown_table(["model", f"{cfg.eval.split} accuracy", "models"], rows)
    print(f"{syn.meta.get('method', '?')} set ({len(syn)} images) on {dataset}:\n{table}")
    if cfg.out:
        with run_folder(cfg.out, "evaluate") as tmp:
            save_config(tmp, cfg)
            write_json(tmp / "metrics.json", {"source": str(args.path), "dataset": dataset, "models": results,
                                              "synthetic_meta": syn.meta, "versions": versions()})
            (tmp / "results.md").write_text(table + "\n")
    sys.stdout.flush()
    return 0
