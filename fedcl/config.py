"""Structured configs (omegaconf dataclasses), loading and validation.

Every command works with no file (the dataclass defaults), with a YAML file, and with
``key=value`` overrides; unknown keys and wrong types fail with a ConfigError before
any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedcl.errors import ConfigError
from fedcl.privacy.config import PrivacyConfig

__all__ = ["DataConfig", "DistillConfig", "EvalConfig", "MISSING", "PrivacyConfig", "config_to_yaml",
           "load_config", "split_argv"]

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where datasets live.

    Attributes:
        root: dataset folder (None: ``$FEDCL_DATA``, else ``./data``; ``digits`` is bundled).
        download: fetch a missing torchvision dataset into ``root`` (needs internet).
        image_size: resize every image to N x N (None keeps the dataset's size).
        val_fraction: carve a stratified validation split (seed 0, the same for every command) out
            of the training data; 0 keeps all of it for training.
    """

    root: str | None = None
    download: bool = False
    image_size: int | None = None
    val_fraction: float = 0.0


@dataclass
class EvalConfig:
    """The evaluation protocol: ``models`` fresh networks trained ``epochs`` on the synthetic set.

    Attributes:
        models: how many fresh networks are trained (accuracy is mean ± std over them).
        epochs: SGD epochs of each network on the synthetic set (lr drops tenfold at half).
        lr: SGD learning rate (momentum 0.9, weight decay 5e-4).
        batch_size: minibatch size.
        dsa: DSA augmentation while training (the DSA/DM papers' protocol).
        split: where accuracy is measured: ``test``, or ``val`` (needs ``data.val_fraction > 0``).
    """

    models: int = 5
    epochs: int = 300
    lr: float = 0.01
    batch_size: int = 256
    dsa: bool = True
    split: str = "test"


@dataclass
class DistillConfig:
    """``fedcl distill``: distill a dataset, evaluate the result, write a run folder.

    Attributes:
        dataset: registered dataset (``digits`` is bundled; mnist, cifar10 ... read ``data.root``).
        method: registered engine (dm, gm, dsa, random, herding, kcenter ...).
        ipc: images per class of the synthetic set (its storage budget).
        model: registered network the engine matches with and the evaluation trains.
        iterations: engine iterations (None: a short schedule that finishes in minutes; a number: the
            engine's own, the papers', schedule; see ``fedcl.commands.QUICK_SCHEDULES``).
        seed: drives every random choice (torch, numpy, python).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1`` ...
        out: run folder (None: ``runs/distill-<dataset>-<method>-ipc<ipc>-<timestamp>``).
        lr_img: learning rate of the synthetic images (None: the engine's default).
        batch_real: real images per class per iteration (None: the engine's default).
        init: initial synthetic images, ``real`` (random real images) or ``noise`` (None: real, and
            noise under DP, which never starts from real images).
        dsa: differentiable siamese augmentation while matching (None: the engine's default).
        engine: further engine options, e.g. ``engine.outer_loop=5`` (validated by the engine).
        model_kwargs: network options, e.g. ``model_kwargs.width=64``.
        param: how the memory is stored: ``images`` (free pixels), ``idc`` (multi-formation: each
            stored image holds factor x factor smaller images) or ``haba`` (bases and hallucinators);
            ``ipc`` is then a storage budget.
        param_kwargs: options of the parameterisation, e.g. ``param_kwargs.factor=2`` (idc),
            ``param_kwargs.hallucinators=5`` (haba).
        soft_labels: learn a soft label per decoded image (initialised from a network trained on the
            real data; stored and counted; evaluated with soft cross-entropy; not under DP).
        progress: progress bar on a terminal (never in CI logs or with ``FEDCL_PROGRESS=0``).
    """

    dataset: str = "digits"
    method: str = "dm"
    ipc: int = 10
    model: str = "convnet"
    iterations: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    lr_img: float | None = None
    batch_real: int | None = None
    init: str | None = None
    dsa: bool | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    param: str = "images"
    param_kwargs: dict[str, Any] = field(default_factory=dict)
    soft_labels: bool = False
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """Split ``[CONFIG.yaml] [key=value ...]`` into the file (or None) and the overrides."""
    path, overrides = None, []
    for i, arg in enumerate(argv):
        if "=" in arg:
            overrides.append(arg)
        elif i == 0 and not arg.startswith("-"):
            path = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: give [CONFIG.yaml] then key=value overrides")
    return path, overrides


def load_config(schema: type[T], argv: list[str] | None = None, *, path: str | os.PathLike[str] | None = None,
                overrides: list[str] | None = None) -> T:
    """Build a validated config: defaults of ``schema``, then a YAML file, then overrides.

    Args:
        schema: a dataclass (e.g. :class:`DistillConfig`).
        argv: command-line words ``[CONFIG.yaml] [key=value ...]`` (alternative to path/overrides).
        path: a YAML file.
        overrides: ``key=value`` strings (dotted keys for nested values); ``key={...}`` replaces a mapping
            (``distill.param_kwargs={}`` drops the file's options), ``key.sub=value`` changes one entry.

    Returns:
        An instance of ``schema`` (a plain dataclass, validated: every value has its declared type).

    Raises:
        ConfigError: missing file, YAML errors, unknown keys, wrong types.
    """
    if argv is not None:
        path, overrides = split_argv(argv)
    base = OmegaConf.structured(schema)
    try:
        merged = [base]
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            merged.append(OmegaConf.load(p))
        if overrides:
            for item in overrides:
                key, _, _ = item.partition("=")
                if not key:
                    raise ConfigError(f"bad override {item!r}: expected key=value")
        conf = OmegaConf.merge(*merged)
        for item in overrides or []:  # in order; key={...} replaces the mapping (a merge would keep the file's keys)
            key = item.partition("=")[0]
            override = OmegaConf.from_dotlist([item])
            value = OmegaConf.select(override, key)
            target = OmegaConf.select(conf, key)
            if isinstance(value, DictConfig) and isinstance(target, DictConfig) and OmegaConf.get_type(target) is dict:
                OmegaConf.update(conf, key, value, merge=False)
            else:
                conf = OmegaConf.merge(conf, override)
        cfg = OmegaConf.to_object(conf)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"invalid config{f' key {key!r}' if key else ''}: {msg}") from None
    except Exception as exc:  # YAML parse errors and the like
        raise ConfigError(f"could not read config: {exc}") from None
    return cfg  # type: ignore[no-any-return]


def config_to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (written next to every run's results)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_yaml(cfg, resolve=True)
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
