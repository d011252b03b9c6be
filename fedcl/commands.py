"""The core commands: ``fedcl distill`` and ``fedcl evaluate``."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field, replace
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

__all__ = ["QUICK_SCHEDULES", "EvaluateConfig", "distill_main", "evaluate_config_argv", "evaluate_main",
           "resolve_schedule", "run_distill", "versions"]

# The schedule of each engine when ``iterations`` is left None: short enough that ``fedcl distill
# method=M`` (ipc 10, evaluation included) finishes on the bundled digits within a few minutes
# on 2 CPU cores (timings in docs/distillation.md). Any explicit ``iterations`` runs the engine's own (the
# papers') schedule instead. Every registered engine has an entry ({}: it has no iterations).
QUICK_SCHEDULES: dict[str, dict[str, Any]] = {
    "dm": {"iterations": 200},  # the paper: 20,000 (iterations=20000)
    # the papers: 1,000 iterations of (outer_loop, inner_loop) = (10, 50) at ipc 10 (iterations=1000)
    "gm": {"iterations": 20, "outer_loop": 5, "inner_loop": 10},
    "dsa": {"iterations": 20, "outer_loop": 5, "inner_loop": 10},
    "random": {},
    "herding": {},
    "kcenter": {},
    # kip's default 8 networks per iteration are for a GPU; 2 keep a digits run within minutes
    "kip": {"iterations": 200, "n_models": 2},
    "frepo": {"iterations": 200},
    # the reference: 5,000 iterations of 20 student steps on 100 experts x 50 epochs
    "mtt": {"iterations": 100, "syn_steps": 10, "num_experts": 2},
}


def versions() -> dict[str, str]:
    """Versions of fedcl, python and torch (for results files)."""
    return {"fedcl": __version__, "python": platform.python_version(), "torch": torch.__version__}


def engine_options(cfg: DistillConfig) -> dict[str, Any]:
    """Keywords for :func:`create_distiller` from a :class:`DistillConfig` (None = engine default)."""
    opts: dict[str, Any] = {"model": cfg.model, "model_kwargs": dict(cfg.model_kwargs) or None, "seed": cfg.seed,
                            "device": cfg.device, "progress": cfg.progress, "iterations": cfg.iterations,
                            "lr_img": cfg.lr_img, "batch_real": cfg.batch_real, "dsa": cfg.dsa, "init": cfg.init}
    if cfg.param != "images" or cfg.param_kwargs:
        opts.update(param=cfg.param, param_kwargs=dict(cfg.param_kwargs))
    if cfg.soft_labels:
        opts["soft_labels"] = True
    opts.update(cfg.engine)
    return opts


def resolve_schedule(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` with ``iterations`` (and engine loops) filled from :data:`QUICK_SCHEDULES` when left None.

    The filled values are written to the run's config.yaml, so the run can be repeated exactly.
    Gradient-matching loops never exceed the paper's for the ipc (at ipc 1 they are (1, 1)).
    """
    if cfg.iterations is not None or cfg.method not in QUICK_SCHEDULES or not QUICK_SCHEDULES[cfg.method]:
        return cfg
    quick = dict(QUICK_SCHEDULES[cfg.method])
    iterations = quick.pop("iterations")
    if "outer_loop" in quick:
        from fedcl.distill.gm import loops_for_ipc

        paper_outer, paper_inner = loops_for_ipc(cfg.ipc)
        quick["outer_loop"] = min(quick["outer_loop"], paper_outer)
        quick["inner_loop"] = min(quick["inner_loop"], paper_inner)
    return replace(cfg, iterations=iterations, engine={**quick, **dict(cfg.engine)})


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
        "num_images": len(syn), "stored_bytes": syn.stored_bytes(), "memory": syn.meta.get("memory"),
        "soft_labels": syn.soft, f"{cfg.eval.split}_accuracy": result.as_dict(), "privacy": syn.meta.get("privacy"),
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
    cfg = resolve_schedule(load_config(DistillConfig, argv))
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
    """``fedcl evaluate PATH``: evaluate a saved synthetic set, or test a saved model (``model.safetensors``).

    Attributes:
        dataset: the real dataset to test on (None: the one recorded in the synthetic set).
        models: architectures to train on the set, each ``eval.models`` times (``--model A,B``).
        seed: evaluation model ``i`` uses ``seed + i``.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` ...
        out: if set, a run folder with config.yaml, metrics.json and results.md.
    """

    dataset: str | None = None
    models: list[str] = field(default_factory=lambda: ["convnet"])
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _evaluate_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """Split ``PATH [--model A,B] [CONFIG.yaml] [key=value ...]`` into the path and the config words."""
    from fedcl.errors import ConfigError

    path, model, config, overrides, words = None, None, [], [], list(argv)
    while words:
        word = words.pop(0)
        if word == "--model" or word.startswith("--model="):
            if "=" not in word and not words:
                raise ConfigError("--model needs a value, e.g. --model convnet,mlp")
            model = word.partition("=")[2] if "=" in word else words.pop(0)
        elif "=" in word:
            overrides.append(word)
        elif word.endswith((".yaml", ".yml")) and not config:
            config.append(word)
        elif path is None and not word.startswith("-"):
            path = word
        else:
            raise ConfigError(f"unexpected argument {word!r}: give PATH [--model A,B] [CONFIG.yaml] then "
                              "key=value overrides")
    return path, config + overrides + ([f"models=[{model}]"] if model else [])


def evaluate_config_argv(argv: list[str]) -> list[str]:
    """The config words (``[CONFIG.yaml] [key=value ...]``) of a ``fedcl evaluate`` command line."""
    return _evaluate_args(argv)[1]


def evaluate_main(argv: list[str]) -> int:
    """``fedcl evaluate PATH/synthetic.safetensors [--model convnet,mlp] [key=value ...]``."""
    from fedcl.errors import ConfigError

    path, words = _evaluate_args(argv)
    if path is None:
        raise ConfigError("fedcl evaluate needs PATH, a synthetic.safetensors or model.safetensors written by fedcl")
    cfg = load_config(EvaluateConfig, words)
    for name in cfg.models:
        MODELS.get(name)
    check_eval_split(cfg.eval.split, cfg.data.val_fraction)
    from fedcl.models.saved import saved_kind

    if saved_kind(path) == "model":  # a trained network: tested as it is, no models trained
        return _evaluate_saved_model(path, cfg)
    syn = SyntheticSet.load(path)
    dataset = cfg.dataset or syn.meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} records no dataset; pass dataset=NAME")
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
            write_json(tmp / "metrics.json", {"source": str(path), "dataset": dataset, "models": results,
                                              "synthetic_meta": syn.meta, "versions": versions()})
            (tmp / "results.md").write_text(table + "\n")
    sys.stdout.flush()
    return 0


def _evaluate_saved_model(path: str, cfg: EvaluateConfig) -> int:
    """``fedcl evaluate model.safetensors``: the accuracy of a saved model (fedcl.models.saved) on ``eval.split``."""
    from fedcl.errors import ConfigError
    from fedcl.models.saved import check_data, evaluate_model, load_model

    model, meta = load_model(path)
    dataset = cfg.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} records no dataset; pass dataset=NAME")
    if cfg.data.image_size is None and meta.get("image_size"):  # the size the model was trained at
        cfg = replace(cfg, data=replace(cfg.data, image_size=int(meta["image_size"])))
    data = load_dataset_from_config(dataset, cfg.data)
    check_data(meta, data, path)
    r = evaluate_model(model, meta, data.for_evaluation(cfg.eval.split), device=cfg.device)
    strategy = f" ({meta['strategy']})" if meta.get("strategy") else ""
    print(f"saved {meta['model']}{strategy} trained on {meta.get('dataset', '?')}, tested on {dataset}: "
          f"{cfg.eval.split} accuracy {r['accuracy']:.4f} ({r['images']} images)")
    if cfg.out:
        with run_folder(cfg.out, "evaluate") as tmp:
            save_config(tmp, cfg)
            write_json(tmp / "metrics.json", {"source": str(path), "dataset": dataset, "split": cfg.eval.split,
                                              f"{cfg.eval.split}_accuracy": r["accuracy"],
                                              "class_accuracy": r["class_accuracy"], "images": r["images"],
                                              "model_meta": meta, "versions": versions()})
            (tmp / "results.md").write_text(markdown_table(["model", f"{cfg.eval.split} accuracy", "images"],
                                                           [[meta["model"], f"{r['accuracy']:.4f}", r["images"]]]) + "\n")
    sys.stdout.flush()
    return 0
