"""The federated settings: one structured config read by ``fedcl federated``, the ServerApp and the ClientApp.

:class:`FederatedConfig` is the only definition of the keys. The command line sets them as
``key=value`` (snake_case, nested keys dotted); a Flower run config carries the same keys in
kebab-case, nested keys dotted the way Flower flattens a TOML table (``privacy.max-grad-norm``),
lists as comma-separated strings (``strategies = "oneshot,feddm"``), the free-form
``param_kwargs`` as a JSON object (``param-kwargs = '{"factor": 2}'``). ``[tool.flwr.app.config]``
in pyproject.toml is :func:`to_run_config` of the defaults (a test checks it), and every run
config a ServerApp or ClientApp receives goes through :func:`from_run_config`: the same
omegaconf type checks as the command line (``"false"`` is False, ``"abc"`` is no int), unknown
keys refused, then :func:`validate` (names and ranges). Bad values raise
:class:`~fedcl.errors.ConfigError` (or :class:`~fedcl.errors.PrivacyError`) with one line.

This module imports no torch and no Flower (the checks that need a registry import it lazily).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedcl.errors import ConfigError

__all__ = ["LOCAL_KEYS", "ClientResources", "FederatedConfig", "FederatedData", "FederatedPrivacy",
           "from_run_config", "run_config_toml", "to_run_config", "validate"]

#: keys of the ``fedcl federated`` command only (the simulation around the app), never in a run config
LOCAL_KEYS = ("out", "centralised", "central_epochs", "client_resources")


@dataclass
class ClientResources:
    """Ray resources of each simulated client (Flower's ``client-resources-*`` federation config).

    Attributes:
        num_cpus: CPU cores Ray reserves per simulated client (a whole number: Flower's federation config).
        num_gpus: GPUs Ray reserves per simulated client; fractions let several clients share a GPU.
    """

    num_cpus: int = 1
    num_gpus: float = 0.0


@dataclass
class FederatedData:
    """Where the dataset is read, and the label space and image size every node agrees on.

    In a deployment a SuperNode started with ``--node-config "data-path=DIR"`` reads its own
    data from ``DIR`` (never from ``root``, which is the server's test set).

    Attributes:
        root: dataset folder ("": ``$FEDCL_DATA``, else ``./data``; ``digits`` is bundled); in a deployment
            the server's own (its test set).
        image_size: resize every image (the server's and each node's) to ``image_size`` x ``image_size``
            (0: keep the size; then every node's images must have the server's size).
        classes: ``dataset=imagefolder``: the label space, class names in label order; a node's folder may
            hold any of them and no other (empty: the server's folder's classes; nodes with a
            ``data-path`` then need it set).
        channels: image channels of the run (0: the server's data's); a node's grey images are repeated to 3
            channels when it is 3, colour images are refused when it is 1.
        server_test: the server evaluates the global model on the test split of its ``data.root``; false: it
            holds no data and reports no test accuracy (then ``classes``, ``image_size`` and ``channels``
            give the label space and image shape).
        val_fraction: hold a stratified validation split (seed 0, as in every command) out of the training
            data before it is partitioned: no client holds it (0: none).
        eval_split: where the server (and the centralised baseline) measure accuracy: ``test``, or ``val``
            (needs ``val_fraction > 0``) to choose settings without reading the test set.
    """

    root: str = ""
    image_size: int = 0
    classes: list[str] = field(default_factory=list)
    channels: int = 0
    server_test: bool = True
    val_fraction: float = 0.0
    eval_split: str = "test"


@dataclass
class FederatedPrivacy:
    """DP of client summaries: each summary a client sends is one release at ``(epsilon, delta)``.

    Attributes:
        epsilon: epsilon of each summary (0: no DP); a client spends it once in ``oneshot`` and composes
            ``feddm_rounds`` of them in ``feddm``.
        budget: cap on a client's total epsilon over its releases (0: no cap, the total is only recorded);
            a client whose next summary would pass it refuses that summary and the run goes on.
        delta: delta of each release.
        max_grad_norm: L2 bound of each example's contribution.
        accountant: accountant of each release and of the client's ledger (``rdp`` or ``prv``: they compose).
        secure_mode: Opacus's cryptographically secure noise.
        center: ``dm``: subtract the synthetic set's mean embedding before clipping.
        replay: ``dm``: passes over the released noisy targets after the private steps (post-processing).
    """

    epsilon: float = 0.0
    budget: float = 0.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    secure_mode: bool = False
    center: bool = True
    replay: int = 4

    def release(self) -> Any:
        """The :class:`~fedcl.privacy.PrivacyConfig` of one summary (one release at ``epsilon``), or None
        without DP."""
        if not self.epsilon:
            return None
        from fedcl.privacy.config import PrivacyConfig

        return PrivacyConfig(epsilon=self.epsilon, delta=self.delta, max_grad_norm=self.max_grad_norm,
                             accountant=self.accountant, center=self.center,
                             replay=self.replay, secure_mode=self.secure_mode)


@dataclass
class FederatedConfig:
    """``fedcl federated`` and fedcl's Flower app: strategies compared on one federated split.

    Every key but ``out``, ``centralised``, ``central_epochs`` and ``client_resources`` (the
    simulation around the app) is also a run-config key of the app, in kebab-case.

    Attributes:
        strategies: strategies run one after the other (``oneshot``, ``feddm``, ``fedavg``), each with its
            own global model, byte counts and client privacy ledgers.
        dataset: registered dataset (``digits`` is bundled; mnist, cifar10 ... read ``data.root``).
        num_clients: simulated SuperNodes; in a deployment the ServerApp waits for and asks at least this many.
        partition: how the training set is split among clients (``iid``, ``dirichlet``, ``shards``).
        alpha: Dirichlet concentration of ``partition=dirichlet`` (small: few classes per client).
        classes_per_client: classes of each client under ``partition=shards``.
        rounds: rounds of ``fedavg``.
        feddm_rounds: rounds of ``feddm`` (``oneshot`` is one round).
        method: client distillation engine (``dm``, ``gm``, ``dsa``, ``random`` ...).
        ipc: summary images per class a client holds (fewer when it holds fewer).
        iterations: engine iterations of each client's distillation.
        batch_real: real images per class per ``dm`` iteration (under DP: the expected Poisson batch).
        lr_img: ``dm`` learning rate of the summary images.
        dp_lr_img: ``dm`` image learning rate under DP (the private mechanism scales every embedding to
            norm ``max_grad_norm``, so its gradients are ~100x smaller).
        dp_min_class_images: under DP, classes a client holds fewer images of are not summarised (their
            noisy means would only pollute the union; experiments/results/federated.md).
        codec: summary codec (``float32``, ``float16``, ``uint8``).
        param: how a client's summary is stored and sent: ``images`` (free pixels), ``idc``
            (multi-formation) or ``haba`` (bases and hallucinators); the server decodes it.
        param_kwargs: options of the parameterisation, e.g. ``param_kwargs.factor=2`` (idc; a JSON object in
            a run config).
        soft_labels: clients learn a soft label per decoded image, sent and counted with the summary (not
            under DP).
        model: registered network of the clients' matching and of the global model.
        width: the network's width (0: the model's default).
        server_epochs: epochs the server trains the global model on the union of summaries.
        server_noise: std of Gaussian noise added to summary images in each server minibatch (0: none).
            DP summaries carry the mechanism's noise unevenly; noise on every image removes the cue.
            Post-processing: no privacy cost.
        server_noise_decay: factor on ``server_noise`` once the server's learning rate falls half-way (1:
            constant).
        local_epochs: local epochs of a ``fedavg`` client per round.
        lr: learning rate of ``fedavg`` clients and of the centralised baseline.
        batch_size: minibatch of ``fedavg`` clients.
        rho: ``feddm``: relative std of the perturbation of the global model clients match in.
        min_summaries: a round with fewer valid summaries fails (when at least this many clients did not
            refuse).
        round_timeout: seconds the server waits for a round's replies (a summary round is a whole
            distillation); a client still busy counts as a dropped summary.
        max_summary_images: most images one summary may hold (0: ``ipc`` times the number of classes).
        seed: drives the split, the clients' seeds and every model initialisation.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... of clients and server.
        threads: torch threads of each client and of the server.
        result_file: the ServerApp writes its result JSON there ("": nowhere; ``fedcl federated`` sets its own).
        model_dir: the ServerApp saves each strategy's final global model in this folder as safetensors
            with a header that rebuilds the network (``model.safetensors``, or ``models/<strategy>.safetensors``
            for several strategies; "": not saved; ``fedcl federated`` sets its run folder).
        out: run folder (None: ``runs/federated-<dataset>-<timestamp>``).
        centralised: also train the model on all the training data (the bar the summaries aim at).
        central_epochs: epochs of the centralised baseline.
        client_resources: Ray resources of each simulated client.
        data: where the dataset is read.
        privacy: DP of client summaries.
    """

    strategies: list[str] = field(default_factory=lambda: ["oneshot", "feddm", "fedavg"])
    dataset: str = "digits"
    num_clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.1
    classes_per_client: int = 2
    rounds: int = 20
    feddm_rounds: int = 3
    method: str = "dm"
    ipc: int = 10
    iterations: int = 200
    batch_real: int = 256
    lr_img: float = 1.0
    dp_lr_img: float = 100.0
    dp_min_class_images: int = 100
    codec: str = "float32"
    param: str = "images"
    param_kwargs: dict[str, Any] = field(default_factory=dict)
    soft_labels: bool = False
    model: str = "convnet"
    width: int = 0
    server_epochs: int = 300
    server_noise: float = 0.0
    server_noise_decay: float = 1.0
    local_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 64
    rho: float = 0.05
    min_summaries: int = 1
    round_timeout: float = 3600.0
    max_summary_images: int = 0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    result_file: str = ""
    model_dir: str = ""
    out: str | None = None
    centralised: bool = True
    central_epochs: int = 50
    client_resources: ClientResources = field(default_factory=ClientResources)
    data: FederatedData = field(default_factory=FederatedData)
    privacy: FederatedPrivacy = field(default_factory=FederatedPrivacy)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the network (``width`` when set)."""
        return {"width": self.width} if self.width else {}

    def num_rounds(self, strategy: str) -> int:
        """Rounds of ``strategy``: ``feddm_rounds``, ``rounds`` (fedavg) or 1 (oneshot)."""
        return {"oneshot": 1, "feddm": self.feddm_rounds}.get(strategy, self.rounds)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def to_run_config(cfg: FederatedConfig) -> dict[str, bool | int | float | str]:
    """The Flower run config of ``cfg``: flat kebab-case keys, nested keys dotted, lists comma-separated
    (the :data:`LOCAL_KEYS` stay out)."""
    out: dict[str, bool | int | float | str] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            if not prefix and f.name in LOCAL_KEYS:
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{_kebab(f.name)}.")
            elif isinstance(value, (list, tuple)):
                out[f"{prefix}{_kebab(f.name)}"] = ",".join(map(str, value))
            elif isinstance(value, dict):
                out[f"{prefix}{_kebab(f.name)}"] = json.dumps(value, sort_keys=True)
            elif isinstance(value, (bool, int, float, str)):
                out[f"{prefix}{_kebab(f.name)}"] = value
            else:  # None has no Flower value: a run-config key needs a concrete default
                raise TypeError(f"{prefix}{f.name}={value!r} cannot travel in a Flower run config")

    walk(cfg, "")
    return out


@functools.lru_cache(maxsize=1)
def _run_config_keys() -> tuple[str, ...]:
    return tuple(to_run_config(FederatedConfig()))


def from_run_config(run_config: Mapping[str, Any], *, check_data: bool = False) -> FederatedConfig:
    """Read and validate a Flower run config (``context.run_config``) as the command line is validated.

    Args:
        run_config: kebab-case keys as :func:`to_run_config` writes them; missing keys keep their
            defaults.
        check_data: also load the dataset (a DataError now rather than in the middle of a run).

    Raises:
        ConfigError: an unknown key, a value of the wrong type (``"abc"`` for an int; ``"false"`` is read
            as False), a name no registry knows, a value out of range.
        PrivacyError: a privacy block no release can meet.
    """
    known = _run_config_keys()
    unknown = sorted(k for k in run_config if k not in known)
    if unknown:
        raise ConfigError(f"unknown run-config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          "`fedcl federated --help` lists the keys (kebab-case in a run config)")
    nested: dict[str, Any] = {}
    for key, value in run_config.items():
        parts = [p.replace("-", "_") for p in key.split(".")]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts in (["strategies"], ["data", "classes"]) and isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        elif parts == ["param_kwargs"] and isinstance(value, str):
            try:
                value = json.loads(value or "{}")
            except json.JSONDecodeError as exc:
                raise ConfigError(f"invalid run-config value 'param-kwargs': not a JSON object ({exc})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"invalid run-config value 'param-kwargs': a JSON object, got {value!r}")
        node[parts[-1]] = value
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FederatedConfig), nested))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f" {_kebab(str(key))!r}" if key else ""
        raise ConfigError(f"invalid run-config value{where}: {str(exc).splitlines()[0]}") from None
    validate(cfg, check_data=check_data, simulation=False)  # type: ignore[arg-type]
    return cfg  # type: ignore[return-value]


def _toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string (JSON's escapes are TOML's)


def run_config_toml(cfg: FederatedConfig) -> str:
    """``[tool.flwr.app.config]`` (and its nested tables) holding :func:`to_run_config` of ``cfg``."""
    tables: dict[str, list[str]] = {}
    for key, value in to_run_config(cfg).items():
        table, _, name = key.rpartition(".")
        tables.setdefault(table, []).append(f"{name} = {_toml_value(value)}")
    lines: list[str] = []
    for table, entries in tables.items():
        lines += [f"[tool.flwr.app.config{'.' + table if table else ''}]", *entries, ""]
    return "\n".join(lines)


def validate(cfg: FederatedConfig, *, check_data: bool = True, simulation: bool = True) -> None:
    """Names and ranges of ``cfg`` (types are the schema's).

    Args:
        cfg: the config.
        check_data: also load the dataset.
        simulation: also check ``client_resources`` against ``device`` and this machine (the
            simulation's; a deployment's nodes bring their own).

    Raises:
        ConfigError, PrivacyError, DataError: one line saying what is wrong.
    """
    from fedcl.data.partition import PARTITIONERS
    from fedcl.distill import list_distillers
    from fedcl.federated.codec import CODECS

    strategy_names = ("oneshot", "feddm", "fedavg")  # fedcl.federated.server_app.STRATEGIES (imports Flower)
    if not cfg.strategies:
        raise ConfigError(f"strategies is empty; name at least one of {', '.join(strategy_names)}")
    for name in cfg.strategies:
        if name not in strategy_names:
            raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(strategy_names)}")
    if len(set(cfg.strategies)) != len(cfg.strategies):
        raise ConfigError(f"strategies lists a strategy twice: {cfg.strategies}")
    if cfg.partition not in PARTITIONERS:
        raise ConfigError(f"unknown partition {cfg.partition!r}; valid: {', '.join(PARTITIONERS.names())}")
    if cfg.codec not in CODECS:
        raise ConfigError(f"unknown codec {cfg.codec!r}; valid: {', '.join(CODECS.names())}")
    if cfg.method not in list_distillers():
        raise ConfigError(f"unknown method {cfg.method!r}; valid: {', '.join(list_distillers())}")
    _validate_memory(cfg)
    for key in ("num_clients", "rounds", "feddm_rounds", "ipc", "iterations", "batch_real", "min_summaries",
                "threads", "server_epochs", "local_epochs", "batch_size", "central_epochs"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    for key in ("width", "max_summary_images", "dp_min_class_images", "seed"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.data.image_size < 0:
        raise ConfigError(f"data.image_size must be >= 0 (0: keep the size), got {cfg.data.image_size}")
    from fedcl.data.split import check_eval_split, check_val_fraction

    check_val_fraction(cfg.data.val_fraction)
    check_eval_split(cfg.data.eval_split, cfg.data.val_fraction)
    if len(set(cfg.data.classes)) != len(cfg.data.classes):
        raise ConfigError(f"data.classes names a class twice: {cfg.data.classes}")
    if cfg.data.channels not in (0, 1, 3):
        raise ConfigError(f"data.channels must be 1, 3 (or 0: the server's data's), got {cfg.data.channels}")
    if not cfg.data.server_test and not (cfg.data.classes and cfg.data.image_size and cfg.data.channels):
        raise ConfigError("data.server_test=false: the server holds no data, so the run config must give the label "
                          "space and image shape: data.classes, data.image_size and data.channels")
    for key in ("alpha", "lr", "lr_img", "dp_lr_img", "round_timeout"):
        if not (getattr(cfg, key) > 0 and math.isfinite(getattr(cfg, key))):
            raise ConfigError(f"{key} must be > 0 (and finite), got {getattr(cfg, key)}")
    for key in ("server_noise", "server_noise_decay", "rho"):
        if not (getattr(cfg, key) >= 0 and math.isfinite(getattr(cfg, key))):
            raise ConfigError(f"{key} must be >= 0 (and finite), got {getattr(cfg, key)}")
    _validate_privacy(cfg)
    if simulation:
        if not cfg.data.server_test:
            raise ConfigError("data.server_test=false is for deployments (the server holds no data); a simulation "
                              "partitions data.root and tests on it")
        _validate_resources(cfg)
    if check_data:
        from fedcl.distill.memory import create_memory
        from fedcl.federated.task import server_data

        data = server_data(cfg)  # DataError now, not inside a client
        if cfg.data.classes and list(data.class_names) != list(cfg.data.classes):
            raise ConfigError(f"data.classes={','.join(cfg.data.classes)} differs from the classes of the server's "
                              f"data ({','.join(data.class_names)}): the run's label space is the server's test set's")
        if cfg.data.channels and data.image_shape[0] != cfg.data.channels:
            raise ConfigError(f"data.channels={cfg.data.channels} but the server's data has {data.image_shape[0]}")
        # param_kwargs that do not fit the images (an idc factor, a haba budget) fail now, too
        create_memory(cfg.param, list(range(data.num_classes)), cfg.ipc, data.image_shape, **cfg.param_kwargs)


def _validate_memory(cfg: FederatedConfig) -> None:
    from fedcl.distill import create_distiller
    from fedcl.distill.memory import list_memories

    if cfg.param not in list_memories():
        raise ConfigError(f"unknown param {cfg.param!r}; valid: {', '.join(list_memories())}")
    if cfg.soft_labels and cfg.privacy.epsilon:
        raise ConfigError("soft_labels under DP is not available (their initialisation trains on real data); "
                          "drop soft_labels or privacy.epsilon")
    if cfg.param != "images" or cfg.soft_labels or cfg.param_kwargs:
        # the engine says whether it optimises a memory at all (selection engines send real images)
        create_distiller(cfg.method, param=cfg.param, param_kwargs=cfg.param_kwargs, soft_labels=cfg.soft_labels)


def _validate_privacy(cfg: FederatedConfig) -> None:
    from fedcl.privacy.ledger import LEDGER_ACCOUNTANTS

    p = cfg.privacy
    if not (p.epsilon >= 0 and math.isfinite(p.epsilon)):
        raise ConfigError(f"privacy.epsilon must be > 0 (or 0: no DP), got {p.epsilon}")
    if p.budget:
        if not p.epsilon:
            raise ConfigError(f"privacy.budget={p.budget} caps the epsilon of DP releases; set privacy.epsilon too")
        if not (p.budget >= p.epsilon and math.isfinite(p.budget)):
            raise ConfigError(f"privacy.budget must be > 0 and >= privacy.epsilon ({p.epsilon:g}, one release), "
                              f"got {p.budget}")
    elif p.budget < 0:
        raise ConfigError(f"privacy.budget must be > 0 (or 0: no cap), got {p.budget}")
    if not p.epsilon:
        return
    from fedcl.privacy.accounting import validate_privacy

    validate_privacy(p.release())  # the rest of the block, before any client starts (PrivacyError)
    if p.accountant not in LEDGER_ACCOUNTANTS:
        raise ConfigError(f"privacy.accountant={p.accountant!r}: a client's ledger composes its releases over rounds, "
                          f"which needs {' or '.join(map(repr, LEDGER_ACCOUNTANTS))} (gdp cannot compose them)")
    if "fedavg" in cfg.strategies:
        raise ConfigError("privacy.epsilon applies to summaries; drop 'fedavg' from strategies for a DP run")


def _validate_resources(cfg: FederatedConfig) -> None:
    res = cfg.client_resources
    if res.num_cpus < 1:
        raise ConfigError(f"client_resources.num_cpus must be at least 1, got {res.num_cpus}")
    if res.num_gpus < 0:
        raise ConfigError(f"client_resources.num_gpus must be >= 0, got {res.num_gpus}")
    if cfg.device.startswith("cuda") and res.num_gpus == 0:
        raise ConfigError(f"device={cfg.device} needs client_resources.num_gpus > 0 (e.g. 0.2 lets five clients "
                          "share a GPU): Ray hides the GPUs from a client that reserves none")
    if res.num_gpus > 0:
        import torch

        if not torch.cuda.is_available():  # Ray would wait for a GPU that never comes
            raise ConfigError(f"client_resources.num_gpus={res.num_gpus} asks for a GPU per client, "
                              "but CUDA is not available here; set client_resources.num_gpus=0")
