"""Run one Avalanche strategy on one benchmark and collect the accuracy matrix.

Strategies are registry entries ``fn(ctx) -> SupervisedTemplate``: stock Avalanche
(``naive``, ``replay``, ``herding``, ``gdumb``) and fedcl's distilled replay
(``distilled``, ``distilled_dsa``, ``distilled_dp``), beside its same-learner baselines
``distilled_random`` and ``distilled_herding``: the same budget, share rule and learner (a
fresh model, the same epochs and augmentation), the memory filled by fedcl's ``random`` and
``herding`` selection through the same :class:`~strategies.replay.DistilledBuffer`, so that
the only difference from ``distilled`` is how the memory is filled.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import GDumb, Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, HerdingSelectionStrategy, ParametricBuffer
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor

from fedcl.continual.benchmarks import Benchmark
from fedcl.continual.config import ContinualConfig
from fedcl.errors import ConfigError, PrivacyError
from fedcl.models import create_model
from fedcl.models.saved import save_memory, save_model
from fedcl.registry import Registry
from fedcl.utils import resolve_device, seed_everything
from strategies.replay import DistilledReplay

__all__ = ["SELECTION_BASELINES", "STRATEGIES", "Context", "check_strategies", "list_strategies", "make_evaluator", "register_strategy",
           "run_strategy"]


@dataclass
class Context:
    """What a strategy builder needs: the config, benchmark, a fresh model, seed, device, evaluator."""

    cfg: ContinualConfig
    bench: Benchmark
    model: torch.nn.Module
    seed: int
    device: torch.device
    evaluator: EvaluationPlugin

    def common(self) -> dict[str, Any]:
        """Keyword arguments every Avalanche strategy takes."""
        opt = torch.optim.SGD(self.model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
        return {"model": self.model, "optimizer": opt, "criterion": torch.nn.CrossEntropyLoss(),
                "train_mb_size": self.cfg.batch_size, "train_epochs": self.cfg.epochs, "eval_mb_size": 1024,
                "device": self.device, "evaluator": self.evaluator}


STRATEGIES: Registry[SupervisedTemplate] = Registry("continual strategy")
Builder = Callable[[Context], SupervisedTemplate]


def register_strategy(name: str) -> Callable[[Builder], Builder]:
    """Register ``fn(ctx: Context) -> SupervisedTemplate`` under ``name``."""
    return STRATEGIES.register(name)


def list_strategies() -> list[str]:
    """Names of every registered strategy."""
    return STRATEGIES.names()


@register_strategy("naive")
def _naive(ctx: Context) -> SupervisedTemplate:
    return Naive(**ctx.common())


@register_strategy("replay")
def _replay(ctx: Context) -> SupervisedTemplate:
    mem = ctx.cfg.mem_size
    return Naive(**ctx.common(), plugins=[ReplayPlugin(mem, storage_policy=ClassBalancedBuffer(mem, adaptive_size=True))])


class _FlatHerding(HerdingSelectionStrategy):
    """Stock iCaRL herding on flattened conv features (the stock class expects ``(N, D)`` features)."""

    def make_sorted_indices_from_features(self, features: Tensor) -> list[int]:
        return super().make_sorted_indices_from_features(features.flatten(1))


@register_strategy("herding")
def _herding(ctx: Context) -> SupervisedTemplate:
    mem = ctx.cfg.mem_size
    layer = "features" if hasattr(ctx.model, "features") else "body"
    storage = ParametricBuffer(mem, groupby="class", selection_strategy=_FlatHerding(ctx.model, layer))
    return Naive(**ctx.common(), plugins=[ReplayPlugin(mem, storage_policy=storage)])


@register_strategy("gdumb")
def _gdumb(ctx: Context) -> SupervisedTemplate:
    return GDumb(**ctx.common(), mem_size=ctx.cfg.mem_size)


def _synthesises(method: str) -> bool:
    from fedcl.distill import DISTILLERS

    return bool(DISTILLERS.get(method).synthesises)


def distiller_kwargs(cfg: ContinualConfig, method: str, device: str) -> dict[str, Any]:
    """The engine options of a distilled strategy: a selection engine takes only the network and device
    (it stores real images at the same budget, no soft labels), and the parameterisation with
    ``distill.param_selections``."""
    d = cfg.distill
    model_kwargs = dict(d.model_kwargs) or dict(cfg.model_kwargs)
    if not _synthesises(method):
        param = {"param": d.param, "param_kwargs": dict(d.param_kwargs)} if d.param_selections else {}
        return {"model_kwargs": model_kwargs, "device": device, **param}
    return {"iterations": d.iterations, "lr_img": d.lr_img, "batch_real": d.batch_real, "model_kwargs": model_kwargs,
            "device": device, "param": d.param, "param_kwargs": dict(d.param_kwargs), "soft_labels": d.soft_labels,
            **dict(d.engine)}


def _distilled(method: str, private: bool) -> Builder:
    def build(ctx: Context) -> SupervisedTemplate:
        d = ctx.cfg.distill
        kwargs = distiller_kwargs(ctx.cfg, method, str(ctx.device))
        return DistilledReplay(**ctx.common(), mem_size=ctx.cfg.mem_size, method=method, distiller_kwargs=kwargs,
                               privacy=ctx.cfg.privacy if private else None, shrink=d.shrink,
                               adaptive_size=d.adaptive_size, gdumb=d.gdumb, gdumb_epochs=d.gdumb_epochs,
                               num_classes=ctx.bench.num_classes,
                               meta=ctx.bench.meta, seed=ctx.seed, owner=f"{ctx.bench.name} stream",
                               records_domain=ctx.bench.records_domain)

    build.engine = method  # type: ignore[attr-defined]
    return build


register_strategy("distilled")(_distilled("dm", False))
register_strategy("distilled_dsa")(_distilled("dsa", False))
register_strategy("distilled_dp")(_distilled("dm", True))
register_strategy("distilled_random")(_distilled("random", False))
register_strategy("distilled_herding")(_distilled("herding", False))

#: the same-learner baselines every synthesising distilled strategy is compared with
SELECTION_BASELINES = ("distilled_random", "distilled_herding")


def synthesising_strategies(names: list[str]) -> list[str]:
    """The strategies among ``names`` whose memory an engine synthesises (reported against the baselines)."""
    return [n for n in names if getattr(STRATEGIES.get(n), "engine", None) is not None
            and _synthesises(STRATEGIES.get(n).engine)]


def make_evaluator() -> EvaluationPlugin:
    """Accuracy and forgetting per experience and stream; a console logger only on a terminal."""
    loggers = [InteractiveLogger()] if sys.stdout.isatty() else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No loggers specified": intended off a terminal
        return EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                forgetting_metrics(experience=True, stream=True), loggers=loggers)


def run_strategy(cfg: ContinualConfig, bench: Benchmark, name: str, seed: int,
                 save_to: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """Train ``name`` over the benchmark's train stream, evaluating on the whole test stream after each experience.

    ``save_to``: ``(learner, memory)`` paths for the final learner and, for a distilled strategy,
    its memory (:mod:`fedcl.models.saved`; None: nothing saved).

    Returns:
        ``accuracy_matrix[i][j]`` (accuracy on test experience j after training experience i),
        ``final_accuracy``, ``forgetting`` (Avalanche's StreamForgetting), ``train_seconds`` and
        ``distill_seconds`` per experience (training time excludes distillation); with a memory,
        ``memory_class_counts`` (decoded images per class), ``memory_class_budgets`` (images' worth
        per class) and ``memory_stored_numel`` (numbers stored, soft labels included).
    """
    seed_everything(seed)
    device = resolve_device(cfg.device)
    model = create_model(cfg.model, bench.in_shape, bench.num_classes, **dict(cfg.model_kwargs))
    strategy = STRATEGIES.get(name)(Context(cfg, bench, model, seed, device, make_evaluator()))
    storage = getattr(strategy, "storage_policy", None)
    train_stream, test_stream = bench.scenario.train_stream, bench.scenario.test_stream
    matrix, train_s, distill_s = [], [], []
    res: dict[str, Any] = {}
    for exp in train_stream:
        before = sum(storage.distill_seconds) if storage is not None else 0.0
        t0 = time.perf_counter()
        # stock ReplayPlugin calls the deprecated ExemplarsBuffer.update(), whose decorator resets the warning
        # filters; recording (and dropping) the warnings keeps logs quiet
        with warnings.catch_warnings(record=True):
            strategy.train(exp, num_workers=0)
        spent = (sum(storage.distill_seconds) - before) if storage is not None else 0.0
        train_s.append(time.perf_counter() - t0 - spent)
        distill_s.append(spent)
        res = strategy.eval(test_stream, num_workers=0)
        matrix.append([float(res[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"])
                       for j in range(len(test_stream))])
    out = {"accuracy_matrix": matrix, "final_accuracy": float(res["Top1_Acc_Stream/eval_phase/test_stream/Task000"]),
           "forgetting": float(res.get("StreamForgetting/eval_phase/test_stream", 0.0)),
           "train_seconds_per_experience": train_s, "distill_seconds_per_experience": distill_s}
    if save_to is not None:  # the final learner (and its distilled memory), rebuilt without pickle
        meta = {**bench.meta, "benchmark": bench.name, "strategy": name, "seed": seed,
                "image_size": cfg.data.image_size, "final_accuracy": out["final_accuracy"]}
        save_model(save_to[0], strategy.model, name=cfg.model, kwargs=dict(cfg.model_kwargs),
                   in_shape=bench.in_shape, num_classes=bench.num_classes, meta=meta)
        if storage is not None:
            save_memory(save_to[1], storage, meta)
    if storage is not None:
        # decoded images (what the learner trains on), each class's budget in images' worth, and numbers stored
        out["memory_class_counts"] = {str(c): n for c, n in storage.class_counts().items()}
        out["memory_class_budgets"] = {str(c): n for c, n in storage.class_budgets().items()}
        out["memory_stored_numel"] = storage.stored_numel()
        spent = storage.privacy_spent
        if storage.privacy is not None and storage.privacy.enabled:
            if any(p is None for p in spent):
                raise PrivacyError(f"strategy {name!r}: the engine reported no privacy spending, so the memory is "
                                   "not known to be DP; use an engine with a DP path")
            ledger = storage.ledger
            out["privacy"] = {"total_epsilon": ledger.spent(), "budget": ledger.epsilon, "delta": ledger.delta,
                              "accountant": ledger.accountant,
                              "epsilon_per_experience": [p["epsilon"] for p in spent],
                              "total_after_experience": ledger.totals(), "per_experience": spent,
                              "composition": "one ledger for the stream's owner: releases on the same records "
                                             "(permuted streams) compose sequentially, on disjoint records (split "
                                             "streams) in parallel; the total is the maximum over records"}
    return out


def check_strategies(cfg: ContinualConfig) -> None:
    """Fail before training on unknown strategies, impossible memories, a DP variant without DP or a bad DP block."""
    unknown = [s for s in cfg.strategies if s not in list_strategies()]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; valid: {', '.join(list_strategies())}")
    if not cfg.strategies:
        raise ConfigError("strategies is empty; name at least one, e.g. strategies=[replay,distilled]")
    if "distilled_dp" in cfg.strategies and not cfg.privacy.enabled:
        raise ConfigError("strategy distilled_dp needs privacy.epsilon=... (or privacy.noise_multiplier=...)")
    if "distilled_dp" in cfg.strategies and cfg.distill.soft_labels:
        raise ConfigError("strategy distilled_dp cannot learn soft labels (their initialisation reads real data "
                          "outside the DP mechanism); drop distill.soft_labels or distilled_dp")
    if cfg.privacy.enabled or cfg.privacy.budget is not None:
        from fedcl.privacy.accounting import validate_privacy
        from fedcl.privacy.ledger import LEDGER_ACCOUNTANTS

        validate_privacy(cfg.privacy)  # PrivacyError, e.g. a budget below epsilon, before any data is loaded
        if cfg.privacy.accountant not in LEDGER_ACCOUNTANTS:
            raise ConfigError(f"privacy.accountant={cfg.privacy.accountant!r}: the stream's ledger composes its "
                              f"releases with {' or '.join(LEDGER_ACCOUNTANTS)}; use one of those")
    from fedcl.distill import list_distillers

    for s in cfg.strategies:
        engine = getattr(STRATEGIES.get(s), "engine", None)
        if engine is not None and engine not in list_distillers():
            raise ConfigError(f"strategy {s!r} needs distillation engine {engine!r}, which is not registered; "
                              f"registered engines: {', '.join(list_distillers())}")
        if engine is not None:  # bad param, param_kwargs or engine options: one line, before any data is loaded
            from fedcl.distill import create_distiller

            create_distiller(engine, **distiller_kwargs(cfg, engine, "cpu"))
    if cfg.distill.shrink not in ("subsample", "redistill"):
        raise ConfigError(f"distill.shrink must be subsample or redistill, got {cfg.distill.shrink!r}")
    if not cfg.seeds:
        raise ConfigError("seeds is empty; give at least one, e.g. seeds=[0]")
