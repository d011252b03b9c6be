"""``fedcl privacy-sweep``: accuracy and membership-inference audit against epsilon, per method.

For every seed, every epsilon in ``epsilons`` (and once without DP when ``nodp``) and
every method (a DP distillation engine such as ``dm``/``dsa``, ``dpsgd``: the model
trained on the real data with Opacus, or ``real``: the same model trained without DP for
``real_epochs``, the audit's reference for a model that saw the data, run once per seed),
the sweep makes the release, evaluates it
(``eval.models`` fresh models trained on the synthetic set, or the DP-SGD model itself),
audits one model trained on it (with the audit on, ``audit_members`` training examples are
held out of every release as the non-members; see ``fedcl.privacy.audit``), and writes
``results.csv``, ``metrics.json``, ``privacy_utility.png`` and ``audit.md`` into one run folder.
``fedcl audit`` is the same run with the audit table as its purpose (same config).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcl.config import DataConfig, EvalConfig, load_config
from fedcl.errors import ConfigError, PrivacyError
from fedcl.privacy.accounting import validate_privacy
from fedcl.privacy.audit import AuditData, audit_model, make_audit_data, shadow_logits, train_shadows
from fedcl.privacy.config import PrivacyConfig

__all__ = ["SweepConfig", "audit_main", "main", "run_sweep"]

BASELINES = ("dpsgd", "real")
"""Methods that train the model on the real data (DP-SGD with Opacus, and plain SGD without DP)."""


@dataclass
class SweepConfig:
    """The privacy/utility sweep (defaults finish on digits in a few minutes on 2 CPU cores).

    Attributes:
        dataset: registered dataset.
        epsilons: target epsilons, one DP release per method at each.
        nodp: also one release of each method without DP.
        methods: DP engines (dm, dsa ...), ``dpsgd`` (the model trained with Opacus) and ``real`` (no DP).
        seeds: one full sweep per seed.
        ipc: images per class of the distilled releases.
        model: network of the releases, the evaluation and the audit.
        width: the network's width.
        iterations: iterations of dm and of every engine but gm/dsa (kip, frepo, mtt ...).
        gm_iterations: gm/dsa iterations.
        gm_outer_loop: gm/dsa outer loop (matching steps per network).
        gm_inner_loop: gm/dsa inner loop (network training epochs per matching step).
        batch_real: real images per class per step (the DP sample rate follows from it).
        lr_img: dm image learning rate without DP.
        dp_lr_img: dm image learning rate under DP.
        param: how the distilled releases store their images (``images``, ``idc``, ``haba``).
        param_kwargs: options of ``param`` (e.g. ``param_kwargs.factor=2`` for idc).
        engine: per-method engine options over the sweep's own, e.g. ``engine.mtt.num_experts=2`` (any engine
            other than dm, gm and dsa runs ``iterations`` iterations with its defaults and these).
        dpsgd_epochs: DP-SGD training epochs.
        dpsgd_batch_size: DP-SGD expected batch size.
        dpsgd_lr: DP-SGD learning rate.
        audit: run the membership-inference audit on one model of each release.
        audit_members: training examples held out of every release as the audit's non-members.
        audit_shadows: shadow models of the likelihood-ratio attack.
        audit_shadow_size: training examples of each shadow model.
        audit_shadow_pipeline: train each release's shadows through that release's own pipeline.
        real_epochs: training epochs of the ``real`` (no DP) reference model.
        device: auto (CUDA when present), cpu, cuda ...
        threads: torch CPU threads (0 leaves torch's default).
        out: run folder (None: ``runs/privacy-sweep-<timestamp>``).
        progress: progress bars on a terminal.
    """

    dataset: str = "digits"
    epsilons: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    nodp: bool = True
    methods: list[str] = field(default_factory=lambda: ["dm", "dsa", "dpsgd"])
    seeds: list[int] = field(default_factory=lambda: [0])
    ipc: int = 10
    model: str = "convnet"
    width: int = 32
    iterations: int = 200
    gm_iterations: int = 10
    gm_outer_loop: int = 5
    gm_inner_loop: int = 10
    batch_real: int = 32
    lr_img: float = 1.0
    dp_lr_img: float = 100.0
    param: str = "images"
    param_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)
    dpsgd_epochs: int = 15
    dpsgd_batch_size: int = 64
    dpsgd_lr: float = 0.1
    audit: bool = True
    audit_members: int = 300
    audit_shadows: int = 4
    audit_shadow_size: int = 1000
    audit_shadow_pipeline: bool = False
    real_epochs: int = 20
    device: str = "auto"
    threads: int = 0
    out: str | None = None
    progress: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(models=2, epochs=100))
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def _validate(cfg: SweepConfig, num_examples: int | None = None) -> None:
    from fedcl.distill import list_distillers

    if not cfg.methods:
        raise ConfigError("methods is empty; e.g. methods=[dm,dsa,dpsgd]")
    for m in cfg.methods:
        if m not in BASELINES and m not in list_distillers():
            raise ConfigError(f"unknown method {m!r}; valid: {', '.join(BASELINES)}, {', '.join(list_distillers())}")
    for m, opts in cfg.engine.items():
        if m not in cfg.methods or m in BASELINES or not isinstance(opts, dict):
            raise ConfigError(f"engine.{m}: engine options are given per distillation method of the sweep "
                              f"({', '.join(x for x in cfg.methods if x not in BASELINES)}), e.g. engine.mtt.num_experts=2")
    if any(e <= 0 for e in cfg.epsilons):
        raise PrivacyError(f"every epsilon must be > 0, got {cfg.epsilons}")
    if cfg.privacy.epsilon is not None or cfg.privacy.noise_multiplier is not None:
        raise ConfigError("set epsilons=[...] for the sweep, not privacy.epsilon/privacy.noise_multiplier")
    if not cfg.epsilons and not cfg.nodp:
        raise ConfigError("nothing to run: epsilons is empty and nodp=false")
    if cfg.audit and cfg.audit_members < 1:
        raise ConfigError(f"audit_members must be >= 1 (members and held-out non-members each), got "
                          f"{cfg.audit_members}; or audit=false")
    for eps in cfg.epsilons:  # the privacy block, checked before any work
        validate_privacy(_privacy(cfg, eps), num_examples)


def _privacy(cfg: SweepConfig, eps: float | None) -> PrivacyConfig | None:
    if eps is None:
        return None
    return replace(cfg.privacy, epsilon=eps, noise_multiplier=None)  # every other setting of the block carries over


def _train_on(x: torch.Tensor, y: torch.Tensor, cfg: SweepConfig, data: Any, seed: int, dev: torch.device,
              dsa: bool) -> torch.nn.Module:
    from fedcl.distill.augment import DSA, default_strategy
    from fedcl.models import create_model
    from fedcl.train import train_model

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = create_model(cfg.model, data.image_shape, data.num_classes, width=cfg.width).to(dev)
    aug = DSA(default_strategy(data.name)) if dsa else None
    augment = (lambda xb: aug.random(xb, gen)) if aug else None
    return train_model(net, x, y, epochs=cfg.eval.epochs, lr=cfg.eval.lr, batch_size=cfg.eval.batch_size,
                       augment=augment, generator=gen, device=dev)


def _release(cfg: SweepConfig, method: str, eps: float | None, seed: int, data: Any, dev: torch.device,
             train: tuple[torch.Tensor, torch.Tensor]) -> tuple[list[torch.nn.Module], list[float],
                                                                 dict[str, Any] | None, float]:
    """Make one release from ``train`` (images, labels) and return (models trained on it, their
    accuracies, privacy record, seconds)."""
    from fedcl.distill import create_distiller
    from fedcl.privacy.dpsgd import train_dpsgd
    from fedcl.train import accuracy

    priv = _privacy(cfg, eps)
    t0 = time.perf_counter()
    if method == "real":  # no DP: the membership reference, trained to fit its data
        net = _blank(cfg, data, dev)
        _fit(net, *train, cfg, seed, dev, epochs=cfg.real_epochs)
        acc = accuracy(net, data.test_images, data.test_labels, device=dev)
        return [net], [acc], None, time.perf_counter() - t0
    if method == "dpsgd":
        res = train_dpsgd(*train, data.num_classes, privacy=priv, model=cfg.model,
                          model_kwargs={"width": cfg.width}, epochs=cfg.dpsgd_epochs,
                          batch_size=cfg.dpsgd_batch_size, lr=cfg.dpsgd_lr, seed=seed, device=dev)
        acc = accuracy(res.model, data.test_images, data.test_labels, device=dev)
        return [res.model], [acc], res.privacy.as_dict() if res.privacy else None, time.perf_counter() - t0
    kw: dict[str, Any] = {"model": cfg.model, "model_kwargs": {"width": cfg.width}, "seed": seed, "device": dev,
                          "progress": cfg.progress, "init": "noise" if priv else "real", "batch_real": cfg.batch_real,
                          "iterations": cfg.iterations, "param": cfg.param, "param_kwargs": dict(cfg.param_kwargs)}
    if method == "dm":
        kw["lr_img"] = cfg.dp_lr_img if priv else cfg.lr_img
    elif method in ("gm", "dsa"):
        kw.update(iterations=cfg.gm_iterations, outer_loop=cfg.gm_outer_loop, inner_loop=cfg.gm_inner_loop)
    kw.update(cfg.engine.get(method, {}))
    syn = create_distiller(method, **kw).distill(
        *train, cfg.ipc, num_classes=data.num_classes, privacy=priv,
        meta={"dataset": data.name, "mean": list(data.mean), "std": list(data.std)})
    if priv is not None and not syn.meta.get("privacy"):
        raise PrivacyError(f"method {method!r} returned no privacy record under DP; refusing to use its output")
    seconds = time.perf_counter() - t0
    models, accs = [], []
    for i in range(cfg.eval.models):
        net = _train_on(syn.images, syn.labels, cfg, data, seed * 100 + i, dev, cfg.eval.dsa)
        models.append(net)
        accs.append(accuracy(net, data.test_images, data.test_labels, device=dev))
    return models, accs, syn.meta.get("privacy"), seconds


def run_sweep(cfg: SweepConfig, folder: Path, log: Any = print) -> dict[str, Any]:
    """Run the sweep into ``folder``; returns the metrics dict (also written as metrics.json)."""
    from fedcl.data import load_dataset_from_config
    from fedcl.privacy.report import write_outputs
    from fedcl.utils import resolve_device

    _validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_dataset_from_config(cfg.dataset, cfg.data).for_evaluation(cfg.eval.split)  # split=val: held-out val
    _validate(cfg, len(data.train_labels))  # delta < 1/N needs N
    dev = resolve_device(cfg.device)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    settings: list[float | None] = [*([None] if cfg.nodp else []), *cfg.epsilons]
    for seed in cfg.seeds:
        shadow_phi = audit_data = None
        train = (data.train_images, data.train_labels)
        if cfg.audit:
            audit_data = make_audit_data(data.train_images, data.train_labels, data.test_images, data.test_labels,
                                         n=cfg.audit_members, seed=seed)
            if not cfg.audit_shadow_pipeline:  # else each row gets its own (below)
                shadows = train_shadows(audit_data, lambda: _blank(cfg, data, dev),
                                        lambda m, x, y, _s=seed: _fit(m, x, y, cfg, _s, dev), k=cfg.audit_shadows,
                                        size=cfg.audit_shadow_size, seed=seed)
                shadow_phi = shadow_logits(audit_data, shadows)
            train = (data.train_images[audit_data.keep], data.train_labels[audit_data.keep])
        for method in cfg.methods:
            for eps in ([None] if method == "real" else settings):
                models, accs, record, secs = _release(cfg, method, eps, seed, data, dev, train)
                row_shadows = shadow_phi
                if audit_data is not None and cfg.audit_shadow_pipeline:
                    row_shadows = _pipeline_shadows(cfg, method, eps, seed, data, dev, audit_data, len(train[1]))
                row = {"method": method, "target_epsilon": eps, "seed": seed,
                       "accuracy": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs) if len(accs) > 1
                       else 0.0, "n_models": len(accs), "epsilon": record["epsilon"] if record else None,
                       "noise_multiplier": record["noise_multiplier"] if record else None,
                       "sample_rate": record["sample_rate"] if record else None,
                       "steps": record["steps"] if record else None, "release_seconds": secs, "privacy": record}
                if audit_data is not None:
                    for attack, res in audit_model(models[0], audit_data, row_shadows, cfg.privacy.delta).items():
                        for k, v in res.items():
                            row[f"{attack}_{k}"] = v
                row["train_size"] = int(len(train[1]))
                rows.append(row)
                log(f"{method:6s} eps={eps if eps is not None else 'none':>5} seed={seed} acc={row['accuracy']:.4f} "
                    f"loss_auc={row.get('loss_auc', float('nan')):.3f} lira_auc={row.get('lira_auc', float('nan')):.3f}"
                    f" ({secs:.0f}s)")
    metrics = {"dataset": data.name, "train_size": int(len(data.train_labels)), "rows": rows,
               "total_seconds": time.perf_counter() - t_start, "config": asdict(cfg)}
    write_outputs(folder, rows, metrics)
    return metrics


def _blank(cfg: SweepConfig, data: Any, dev: torch.device) -> torch.nn.Module:
    from fedcl.models import create_model

    return create_model(cfg.model, data.image_shape, data.num_classes, width=cfg.width).to(dev)


def _pipeline_shadows(cfg: SweepConfig, method: str, eps: float | None, seed: int, data: Any, dev: torch.device,
                      audit_data: AuditData, size: int) -> np.ndarray:
    """Shadow scores made by the target's own pipeline (same method, same epsilon) on pool samples.

    Each shadow release uses ``size`` pool examples (the target's training size, capped at
    the pool) and a seed of its own; releases repeat until ``audit_shadows`` models exist
    (one release of a synthetic set gives ``eval.models`` of them)."""
    gen = torch.Generator().manual_seed(seed + 4242)
    models: list[torch.nn.Module] = []
    k = 0
    while len(models) < max(2, cfg.audit_shadows):
        k += 1
        idx = torch.randperm(len(audit_data.shadow_y), generator=gen)[:size]
        pool = (audit_data.shadow_x[idx], audit_data.shadow_y[idx])
        ms, *_ = _release(cfg, method, eps, seed + 7919 * k, data, dev, pool)
        models += ms
    return shadow_logits(audit_data, models)


def _fit(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: SweepConfig, seed: int, dev: torch.device,
         epochs: int | None = None) -> None:
    from fedcl.train import train_model

    train_model(m, x, y, epochs=epochs or cfg.dpsgd_epochs, lr=cfg.dpsgd_lr, weight_decay=0.0,
                batch_size=cfg.dpsgd_batch_size, lr_decay=False, generator=torch.Generator().manual_seed(seed + 5), device=dev)


def main(argv: list[str]) -> int:
    """``fedcl privacy-sweep [CONFIG.yaml] [key=value ...]``."""
    from fedcl.runs import final_path, run_folder, save_config

    cfg = load_config(SweepConfig, argv)
    _validate(cfg)
    with run_folder(cfg.out, "privacy-sweep") as folder:
        save_config(folder, cfg)
        run_sweep(cfg, folder)
    print(f"wrote {final_path(folder)}")
    return 0


def audit_main(argv: list[str]) -> int:
    """``fedcl audit``: the sweep with the audit on (its audit.md is the report)."""
    from fedcl.runs import final_path, run_folder, save_config

    cfg = load_config(SweepConfig, argv)
    cfg.audit = True
    _validate(cfg)
    with run_folder(cfg.out, "privacy-audit") as folder:
        save_config(folder, cfg)
        run_sweep(cfg, folder)
    print(f"wrote {final_path(folder)}/audit.md")
    return 0
