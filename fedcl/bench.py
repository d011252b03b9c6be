"""``fedcl bench``: engines x datasets x ipc under one evaluation protocol, as results tables.

Every row is distilled with the engine's options (``engine.<name>.*``; unset: the short schedule
of ``fedcl distill``), saved, and evaluated by the same protocol (:func:`fedcl.evaluate.evaluate_synthetic`:
``eval.models`` fresh networks, SGD, DSA augmentation, mean ± std). Each row reports its gain
over ``random`` at the same dataset and ipc under that identical recipe (DD-Ranking's
"improvement over random"). Soft-label rows (``soft_label_engines``) form their own table,
whose baseline is ``random`` with soft labels: the same random real images labelled by the same
soft-label initialisation (``dm`` with ``iterations=0``), so a gain there is what the engine adds
beyond the labels. Every saved set is also evaluated on each ``cross_arch`` network. The run
folder holds config.yaml, metrics.json, results.md (with the command, device and versions) and
``sets/<dataset>/*.safetensors``; ``results_md=PATH`` writes results.md there too.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcl.config import DataConfig, DistillConfig, EvalConfig, load_config, split_argv
from fedcl.errors import ConfigError

__all__ = ["QUICK", "BenchConfig", "Row", "add_gains", "bench_config_argv", "check_ipcs", "load_datasets", "main", "plan",
           "previous_rows", "reuse_row", "run_bench", "run_row"]


@dataclass
class BenchConfig:
    """``fedcl bench``: distillation tables (the defaults: every CPU engine on the bundled digits).

    Attributes:
        datasets: registered datasets, one table of each kind per dataset.
        engines: registered engines, one hard-label row each per dataset and ipc (``random`` is
            the baseline of the gain column).
        ipcs: images per class (storage budgets), each at most the smallest class's training images.
        soft_label_engines: matching engines also run with ``soft_labels=true``: rows of the
            soft-label table, whose baseline is ``random`` with the same soft labels.
        gains: report each row's gain over ``random`` (then ``random`` must be in ``engines``).
        engine: options of each engine by name, e.g. ``engine.dm.iterations=1000`` (unset: the short
            schedule of ``fedcl distill``; any ``create_distiller`` keyword, e.g. ``param``).
        model: network the engines match with and the main tables evaluate.
        model_kwargs: options of ``model``, e.g. ``model_kwargs.width=64``.
        cross_arch: networks of the cross-architecture table, each evaluates every saved set ([]: none).
        arch_kwargs: options of each cross-architecture network by name (``model`` uses ``model_kwargs``).
        seed: drives distillation and evaluation (evaluation model ``i`` uses ``seed + i``).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` ...
        out: run folder (None: ``runs/bench-<timestamp>``).
        results_md: also write results.md to this path (e.g. ``experiments/results/distill_digits.md``).
        progress: progress bars on a terminal.
        resume: earlier bench run folders, finished or stopped part-way (each with its config.yaml
            and metrics.json), e.g. ``resume=[runs/a,runs/b]`` (``resume=runs/a`` for one): each of
            their rows with this run's dataset, engine, ipc, labels and engine options is reused
            (numbers kept, set copied when the folder still has it) instead of run again; where two
            folders hold the same row, the first listed wins. Each must have this run's protocol
            (model, model_kwargs, seed, eval, data but ``root``), else the run stops before any row
            with the folder and the setting that differs. ``cross_arch`` may differ: a network the
            earlier run did not evaluate (or built with other ``arch_kwargs``) evaluates the copied
            set in this run; a row without its set is then run again.
    """

    datasets: list[str] = field(default_factory=lambda: ["digits"])
    engines: list[str] = field(default_factory=lambda: ["random", "herding", "kcenter", "dm", "dsa", "kip", "frepo"])
    ipcs: list[int] = field(default_factory=lambda: [1, 10, 50])
    soft_label_engines: list[str] = field(default_factory=lambda: ["dm", "dsa"])
    gains: bool = True
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    cross_arch: list[str] = field(default_factory=lambda: ["convnet", "mlp", "lenet", "resnet18"])
    arch_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    results_md: str | None = None
    progress: bool = True
    resume: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ``--quick``: applied after CONFIG.yaml and before the command line's key=value overrides. A few
# minutes on 2 CPU cores: digits, ipc 1 and 10, short schedules (and a soft-label initialisation of 20
# steps instead of 100), 2 evaluation models of 100 epochs (at 30, a set of 100 images gets 30 SGD steps
# and ConvNets stay 10 points short), and no ResNet-18 in the cross-architecture table (0.3 CPU-s per
# step on 8x8 digits: 20 minutes, more than the rest of the run together).
_QUICK_ENGINES: dict[str, dict[str, int]] = {
    "dm": {"iterations": 20}, "dsa": {"iterations": 2, "outer_loop": 2, "inner_loop": 5},
    "gm": {"iterations": 2, "outer_loop": 2, "inner_loop": 5}, "kip": {"iterations": 20, "n_models": 1},
    "frepo": {"iterations": 20},
}
QUICK: list[str] = [
    "datasets=[digits]", "ipcs=[1,10]", "data.image_size=null", "eval.models=2", "eval.epochs=100",
    "cross_arch=[convnet,mlp,lenet]",
    *(f"engine.{e}.{k}={v}" for e, opts in _QUICK_ENGINES.items() for k, v in {**opts, "soft_label_steps": 20}.items()),
]


@dataclass
class Row:
    """One row to run: an engine on a dataset at an ipc, with hard or soft labels.

    Attributes:
        dataset: registered dataset.
        engine: registered engine (``random`` of a soft-label table runs as ``dm`` with 0 iterations).
        ipc: images per class.
        soft: the soft-label table's row.
        options: the ``create_distiller`` keywords (the resolved schedule included).
    """

    dataset: str
    engine: str
    ipc: int
    soft: bool
    options: dict[str, Any]

    @property
    def method(self) -> str:
        """The engine that runs (the soft-label ``random`` baseline runs ``dm`` without iterations)."""
        return "dm" if self.soft and self.engine == "random" else self.engine

    @property
    def name(self) -> str:
        """File stem of the saved set."""
        return f"{self.engine}-ipc{self.ipc}{'-soft' if self.soft else ''}"


def bench_config_argv(argv: list[str]) -> list[str]:
    """``[CONFIG.yaml] [--quick] [key=value ...]`` as config words, with ``--quick``'s overrides inserted."""
    words = [w for w in argv if w != "--quick"]
    quick = len(words) != len(argv)
    for w in words:
        if w.startswith("-"):
            raise ConfigError(f"unexpected option {w!r}: fedcl bench takes [CONFIG.yaml] [--quick] [key=value ...]")
    path, overrides = split_argv(words)
    # one folder may be given without brackets: resume=runs/a is resume=[runs/a]
    overrides = [f"resume=[{w[7:]}]" if w.startswith("resume=") and not w[7:].startswith("[") else w
                 for w in overrides]
    return ([path] if path else []) + (QUICK if quick else []) + overrides


def _options(cfg: BenchConfig, engine: str, ipc: int, soft: bool) -> dict[str, Any]:
    """``create_distiller`` keywords of one row: ``engine.<name>`` over the schedule of ``fedcl distill``."""
    from fedcl.commands import resolve_schedule

    user = dict(cfg.engine.get(engine, {}))
    iterations = user.pop("iterations", None)
    sched = resolve_schedule(DistillConfig(method=engine, ipc=ipc, iterations=iterations, engine=user))
    opts: dict[str, Any] = {"model": cfg.model, "model_kwargs": dict(cfg.model_kwargs) or None, "seed": cfg.seed,
                            "device": cfg.device, "progress": cfg.progress, "iterations": sched.iterations,
                            **dict(sched.engine)}
    if soft:
        opts["soft_labels"] = True
    return opts


def plan(cfg: BenchConfig) -> list[Row]:
    """Every row of ``cfg``, baselines first within each (dataset, ipc); validates names and options.

    Raises:
        ConfigError: an empty list, an unknown dataset, engine or network, a duplicate, an ipc
            below 1, bad engine options, or gains asked without ``random``.
    """
    from fedcl.data import DATASETS, check_eval_split
    from fedcl.distill import DISTILLERS, create_distiller
    from fedcl.models import MODELS

    for key, example in (("datasets", "[digits]"), ("engines", "[random,dm]"), ("ipcs", "[1,10]")):
        if not getattr(cfg, key):
            raise ConfigError(f"{key} is empty; e.g. {key}={example}")
    for key in ("datasets", "engines", "ipcs", "soft_label_engines", "cross_arch"):
        values = list(getattr(cfg, key))
        dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if dup is not None:
            raise ConfigError(f"{key} lists {dup!r} twice")
    for name in cfg.datasets:
        DATASETS.get(name)
    for name in [*cfg.engines, *cfg.soft_label_engines, *cfg.engine]:
        DISTILLERS.get(name)
    for name in [cfg.model, *cfg.cross_arch, *cfg.arch_kwargs]:
        MODELS.get(name)
    if any(ipc < 1 for ipc in cfg.ipcs):
        raise ConfigError(f"every ipc must be at least 1, got ipcs={list(cfg.ipcs)}")
    if cfg.gains and "random" not in cfg.engines:
        raise ConfigError("gains over random need engine 'random': add it to engines (engines=[random,...]) "
                          "or set gains=false")
    check_eval_split(cfg.eval.split, cfg.data.val_fraction)
    soft_engines = list(cfg.soft_label_engines)
    if soft_engines and cfg.gains and "random" not in soft_engines:
        soft_engines.insert(0, "random")  # the soft-label baseline
    hard = sorted(cfg.engines, key=lambda e: e != "random")
    rows = [Row(d, e, ipc, soft, _options(cfg, "dm" if soft and e == "random" else e, ipc, soft))
            for d in cfg.datasets for ipc in cfg.ipcs
            for soft, engines in ((False, hard), (True, soft_engines)) for e in engines]
    for row in rows:
        if row.method != row.engine:
            row.options["iterations"] = 0
        create_distiller(row.method, **row.options)  # bad options fail here, before any data is read
    return rows


def check_ipcs(cfg: BenchConfig, data: Any) -> None:
    """ConfigError unless every ipc fits the smallest class of ``data``'s training split."""
    import torch

    counts = torch.bincount(data.train_labels.cpu(), minlength=data.num_classes)
    smallest = int(counts[counts > 0].min())
    too_big = [ipc for ipc in cfg.ipcs if ipc > smallest]
    if too_big:
        raise ConfigError(f"ipc={too_big[0]} is more than the smallest class of {data.name} has ({smallest} training "
                          f"images); use ipcs of at most {smallest}")


def _networks(cfg: BenchConfig) -> list[str]:
    """The networks that evaluate every set: the main model first, then ``cross_arch`` (each once)."""
    return list(dict.fromkeys([cfg.model, *cfg.cross_arch]))


def _arch_options(cfg: BenchConfig, arch: str) -> dict[str, Any]:
    """The options ``arch`` is built with in ``cfg``'s evaluation (``model`` uses ``model_kwargs``)."""
    return dict(cfg.model_kwargs) if arch == cfg.model else dict(cfg.arch_kwargs.get(arch, {}))


def evaluate_networks(syn: Any, cfg: BenchConfig, data: Any, archs: list[str]) -> dict[str, Any]:
    """Accuracy (``{mean, std, ...}``) of ``syn`` on each of ``archs`` under ``cfg``'s evaluation protocol."""
    from fedcl.evaluate import evaluate_synthetic

    test = data.for_evaluation(cfg.eval.split)
    accuracy: dict[str, Any] = {}
    for arch in archs:
        kwargs = _arch_options(cfg, arch)
        accuracy[arch] = evaluate_synthetic(syn, test, model=arch, n_models=cfg.eval.models, epochs=cfg.eval.epochs,
                                            lr=cfg.eval.lr, batch_size=cfg.eval.batch_size, dsa=cfg.eval.dsa,
                                            seed=cfg.seed, device=cfg.device, model_kwargs=kwargs or None).as_dict()
    return accuracy


def run_row(row: Row, cfg: BenchConfig, data: Any, folder: Path) -> dict[str, Any]:
    """Distill one row, save its set under ``folder``, evaluate it (main model and cross-architecture)."""
    from fedcl.distill import create_distiller
    from fedcl.utils import seed_everything

    seed_everything(cfg.seed)
    distiller = create_distiller(row.method, **row.options)
    meta = {"dataset": data.name, "mean": list(data.mean), "std": list(data.std)}
    syn = distiller.distill(data.train_images, data.train_labels, row.ipc, num_classes=data.num_classes, meta=meta)
    path = folder / "sets" / data.name / f"{row.name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    syn.save(path)
    t0 = time.perf_counter()
    accuracy = evaluate_networks(syn, cfg, data, _networks(cfg))
    return {"dataset": data.name, "engine": row.engine, "method": row.method, "ipc": row.ipc, "soft_labels": row.soft,
            "options": {k: v for k, v in row.options.items() if v is not None}, "iterations": distiller.iterations,
            "seconds_per_iteration": distiller.stats.get("seconds_per_iteration"),
            "distill_seconds": distiller.stats.get("distill_seconds"),
            "label_seconds": distiller.stats.get("label_seconds"), "eval_seconds": time.perf_counter() - t0,
            "stored_bytes": syn.stored_bytes(),
            "num_images": len(syn), "accuracy": accuracy[cfg.model], "cross_arch": accuracy,
            "set": str(path.relative_to(folder))}


#: what a reused row must share with this run besides its own keys (``data.root`` may move); the
#: cross-architecture networks may differ: a network the earlier run lacks evaluates the reused set here
_PROTOCOL = ("model", "model_kwargs", "seed", "eval", "data")
#: engine options that do not change a row's set
_RUNTIME = ("device", "progress")


def _row_key(dataset: str, engine: str, ipc: int, soft: bool, options: dict[str, Any]) -> str:
    """A row's identity as JSON: options without the runtime ones, unset ones dropped."""
    import json

    opts = {k: v for k, v in options.items() if v is not None and k not in _RUNTIME}
    return json.dumps([dataset, engine, ipc, soft, opts], sort_keys=True, default=str)


def previous_rows(cfg: BenchConfig) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Where ``cfg.resume``'s rows come from (per folder: folder, command, date, device, versions), and
    their rows by :func:`_row_key` (the first folder listed wins a row two hold), after checking that
    each folder's protocol is this run's.

    Raises:
        ConfigError: no such run folder, or a protocol setting that differs (named in the message).
        DataError: an unreadable config.yaml or metrics.json.
    """
    origins: list[dict[str, Any]] = []
    rows: dict[str, dict[str, Any]] = {}
    for folder in dict.fromkeys(Path(str(f)) for f in cfg.resume):
        origin, found = _folder_rows(cfg, folder)
        origins.append(origin)
        for key, row in found.items():
            rows.setdefault(key, row)
    return origins, rows


def _earlier_config(path: Path) -> BenchConfig:
    """An earlier run's config.yaml (runs before ``resume`` became a list wrote one folder or null)."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.load(path)
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path} is not a mapping of settings")
    if "resume" in raw and not OmegaConf.is_list(raw.resume):
        raw.resume = [] if raw.resume is None else [str(raw.resume)]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BenchConfig), raw))  # type: ignore[return-value]


def _folder_rows(cfg: BenchConfig, folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One resumed folder's origin and rows by :func:`_row_key` (each row's ``reused_from`` set to it)."""
    import dataclasses
    import json

    import yaml
    from omegaconf.errors import OmegaConfBaseException

    from fedcl.errors import DataError

    if not (folder / "config.yaml").is_file() or not (folder / "metrics.json").is_file():
        raise ConfigError(f"resume={folder}: not a bench run folder (it needs config.yaml and metrics.json)")
    try:
        old = _earlier_config(folder / "config.yaml")
        metrics = json.loads((folder / "metrics.json").read_text())
        rows = list(metrics["rows"])
    except (ConfigError, OmegaConfBaseException, yaml.YAMLError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"resume={folder}: cannot read its config.yaml or metrics.json ({exc})") from exc
    for key in _PROTOCOL:
        mine, theirs = getattr(cfg, key), getattr(old, key)
        if key == "data":
            mine, theirs = (dataclasses.replace(d, root=None) for d in (mine, theirs))
        if mine != theirs:
            raise ConfigError(f"resume={folder} was evaluated with {key}={theirs}, this run with {key}={mine}; "
                              "rows are reused only under the same protocol")
    origin = {"folder": str(folder), **{k: metrics.get(k) for k in ("command", "date", "device", "versions")}}
    # a network's figures count only where both runs build it with the same options; what the earlier run
    # evaluated on a set it reused (``evaluated_here``) is not this run's doing
    same = {a for a in _networks(old) if _arch_options(old, a) == _arch_options(cfg, a)}
    return origin, {_row_key(r["dataset"], r["engine"], r["ipc"], r["soft_labels"], r["options"]):
                    {**{k: v for k, v in r.items() if k not in ("evaluated_here", "eval_here_seconds")},
                     "reused_from": str(folder), "cross_arch": {a: v for a, v in r["cross_arch"].items() if a in same}}
                    for r in rows}


def _unevaluated(found: dict[str, Any], cfg: BenchConfig) -> list[str]:
    """The networks of ``cfg`` that an earlier run's row (:func:`previous_rows`) has no figures for."""
    return [a for a in _networks(cfg) if a not in found["cross_arch"]]


def _saved_set(found: dict[str, Any]) -> Path | None:
    """The set file of an earlier run's row (:func:`previous_rows`), None when its folder no longer has it."""
    path = Path(found["reused_from"]) / str(found.get("set"))
    return path if found.get("set") and path.is_file() else None


def reuse_row(row: Row, found: dict[str, Any], folder: Path, cfg: BenchConfig | None = None,
              data: Any = None) -> dict[str, Any]:
    """A row of an earlier run (:func:`previous_rows`) as this run's: its numbers, its set copied into
    ``folder`` when its run folder (``found["reused_from"]``) still has it. With ``cfg`` and ``data``, its
    cross-architecture figures are those of ``cfg``'s networks, and the networks the earlier run did not
    evaluate (``evaluated_here``) evaluate the copied set now; that needs the set.

    Raises:
        DataError: networks to evaluate, and no saved set to evaluate them on.
    """
    import shutil

    from fedcl.errors import DataError

    r, old = dict(found), _saved_set(found)
    missing = _unevaluated(found, cfg) if cfg is not None else []
    if missing and old is None:
        raise DataError(f"resume: the {row.name} row of {found['reused_from']} has no saved set to evaluate "
                        f"{', '.join(missing)} on")
    if old is not None:
        new = folder / "sets" / row.dataset / f"{row.name}.safetensors"
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(old, new)
        r["set"] = str(new.relative_to(folder))
    else:
        r["set"] = None  # the earlier folder no longer has it (e.g. a results folder that keeps metrics only)
    if cfg is None:
        return r
    if missing:
        from fedcl.distill import SyntheticSet

        t0 = time.perf_counter()
        r["cross_arch"] = {**found["cross_arch"],
                           **evaluate_networks(SyntheticSet.load(folder / r["set"]), cfg, data, missing)}
        r["evaluated_here"], r["eval_here_seconds"] = missing, time.perf_counter() - t0
    r["cross_arch"] = {a: r["cross_arch"][a] for a in _networks(cfg)}  # this run's networks, in its order
    return r


def add_gains(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``gain_over_random`` (accuracy points over ``random`` of its table; None without one)."""
    base = {(r["dataset"], r["ipc"], r["soft_labels"]): r["accuracy"]["mean"] for r in rows if r["engine"] == "random"}
    for r in rows:
        ref = base.get((r["dataset"], r["ipc"], r["soft_labels"]))
        r["gain_over_random"] = None if ref is None else 100 * (r["accuracy"]["mean"] - ref)


def load_datasets(cfg: BenchConfig) -> dict[str, Any]:
    """Every dataset of ``cfg``, read and checked against ``ipcs`` (before the first row runs)."""
    from fedcl.data import load_dataset_from_config

    datasets = {}
    for name in cfg.datasets:
        datasets[name] = load_dataset_from_config(name, cfg.data)
        check_ipcs(cfg, datasets[name])
    return datasets


def run_bench(cfg: BenchConfig, folder: Path, *, command: str = "fedcl bench",
              datasets: dict[str, Any] | None = None,
              previous: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Run every row of ``cfg`` into ``folder``; write metrics.json and results.md; return the metrics.

    Args:
        cfg: the benchmark.
        folder: where the sets, metrics.json and results.md go.
        command: the command line recorded in the results.
        datasets: the loaded datasets by name (None: read them here).
        previous: :func:`previous_rows` of ``cfg`` (None: read them here when ``cfg.resume`` is set).

    Raises:
        ConfigError, DataError: bad names, options or ipcs, missing data (before any row runs).
    """
    from fedcl.benchreport import environment, results_markdown
    from fedcl.runs import write_json

    t0 = time.perf_counter()
    rows = plan(cfg)
    origins, earlier = previous or (previous_rows(cfg) if cfg.resume else ([], {}))
    datasets = datasets or load_datasets(cfg)
    env = environment(cfg.device)
    results: list[dict[str, Any]] = []

    def write(done: bool) -> dict[str, Any]:
        # after every row, so a run stopped early (a long CPU schedule) leaves the rows it finished
        rows_so_far = [dict(r) for r in results]
        if cfg.gains:
            add_gains(rows_so_far)
        metrics = {"command": command, **env, "wall_seconds": time.perf_counter() - t0, "split": cfg.eval.split,
                   "rows": rows_so_far, "complete": done, "planned_rows": len(rows),
                   **({"resumed": origins} if origins else {})}
        write_json(folder / "metrics.json", metrics)
        (folder / "results.md").write_text(results_markdown(cfg, metrics))
        return metrics

    for row in rows:
        found = earlier.get(_row_key(row.dataset, row.engine, row.ipc, row.soft, row.options))
        if found and _unevaluated(found, cfg) and _saved_set(found) is None:
            print(f"{row.dataset} ipc {row.ipc} {row.name}: {found['reused_from']} lacks networks of cross_arch "
                  "and its set; running it again", flush=True)
            found = None
        if found:
            r = reuse_row(row, found, folder, cfg, datasets[row.dataset])
        else:
            r = run_row(row, cfg, datasets[row.dataset], folder)
        results.append(r)
        acc = r["accuracy"]
        how = (f"reused from {r['reused_from']}" + (f"; {', '.join(r['evaluated_here'])} evaluated here"
                                                    if r.get("evaluated_here") else "")
               if "reused_from" in r else f"{r['distill_seconds']:.1f} s distilling")
        print(f"{row.dataset} ipc {row.ipc} {row.engine}{' (soft labels)' if row.soft else ''}: "
              f"{cfg.eval.split} {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} % ({how})", flush=True)
        if len(results) < len(rows):
            write(done=False)
    return write(done=True)


def main(argv: list[str]) -> int:
    """``fedcl bench [CONFIG.yaml] [--quick] [key=value ...]``."""
    from fedcl.runs import final_path, run_folder, save_config

    cfg = load_config(BenchConfig, bench_config_argv(argv))
    t0 = time.perf_counter()
    plan(cfg)  # names, options and gains, the resumed run's protocol, then the data and ipcs: all before a folder exists
    previous = previous_rows(cfg) if cfg.resume else None
    datasets = load_datasets(cfg)
    target = Path(cfg.results_md) if cfg.results_md else None
    if target is not None and target.is_dir():
        raise ConfigError(f"results_md={target} is a folder; give a file path such as {target / 'distill.md'}")
    command = shlex.join(["fedcl", "bench", *argv])
    with run_folder(cfg.out, "bench") as tmp:
        save_config(tmp, cfg)
        metrics = run_bench(cfg, tmp, command=command, datasets=datasets, previous=previous)
    folder = final_path(tmp)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.tmp")
        part.write_text((folder / "results.md").read_text())
        part.replace(target)  # atomic: a reader never sees half a table
    print(f"{len(metrics['rows'])} rows in {time.perf_counter() - t0:.0f} s -> {folder}/results.md"
          + (f" and {target}" if target is not None else ""))
    return 0
