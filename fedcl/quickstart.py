"""``fedcl quickstart``: the short tour on the bundled digits (the README's first command).

Each step is ``step(out: Path, device: str) -> str``: it writes into its own sub-folder of
the run folder and returns a short summary to print. Areas add their step to ``STEPS``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedcl.config import DistillConfig, EvalConfig, load_config
from fedcl.data import load_dataset
from fedcl.report import markdown_table
from fedcl.runs import final_path, run_folder, save_config, write_json

__all__ = ["STEPS", "QuickstartConfig", "distill_step", "main"]

# "module:function" of each step, run in order (lazy imports keep start-up light)
STEPS: list[str] = [
    "fedcl.quickstart:distill_step",
    "fedcl.federated.quickstart:federated_step",
    "fedcl.privacy.quickstart:privacy_step",
    "fedcl.continual.quickstart:continual_step",
]

# dm and dsa at ipc 10 against random real images, sized to take about a minute on 2 CPU cores
_METHODS = {"random": {}, "dm": {"iterations": 200}, "dsa": {"iterations": 4, "engine": {"outer_loop": 5, "inner_loop": 10}}}


def distill_step(out: Path, device: str) -> str:
    """Distill digits with dm and dsa at ipc 10, evaluate beside random real images."""
    from fedcl.commands import run_distill

    data = load_dataset("digits")
    rows, summary = [], {}
    for method, opts in _METHODS.items():
        cfg = DistillConfig(dataset="digits", method=method, ipc=10, device=device, progress=False,
                            iterations=opts.get("iterations"), engine=dict(opts.get("engine", {})),
                            eval=EvalConfig(models=3, epochs=300))
        folder = out / method
        folder.mkdir()
        save_config(folder, cfg)
        m = run_distill(cfg, folder, data)
        acc = m["test_accuracy"]
        summary[method] = acc
        rows.append([method, 10, f"{acc['mean']:.3f} ± {acc['std']:.3f}", f"{m['distill_seconds']:.1f}"])
    table = markdown_table(["method", "ipc", "test accuracy (3 models)", "distill s"], rows)
    (out / "distill.md").write_text(table + "\n")
    return "Distillation on digits (1,347 train / 450 test images):\n" + table


@dataclass
class QuickstartConfig:
    """Which steps to run (all by default), where, and on which device.

    Attributes:
        steps: the steps to run, in order (distill, federated, privacy, continual).
        device: auto (CUDA when present), cpu, cuda ...
        out: run folder (None: ``runs/quickstart-<timestamp>``).
    """

    steps: list[str] = field(default_factory=lambda: [s.rsplit(":", 1)[1].removesuffix("_step") for s in STEPS])
    device: str = "auto"
    out: str | None = None


def _step_fn(target: str) -> Callable[[Path, str], str]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    """Run the quickstart steps into one run folder and print their summaries."""
    cfg = load_config(QuickstartConfig, argv)
    names = {s.rsplit(":", 1)[1].removesuffix("_step"): s for s in STEPS}
    unknown = [s for s in cfg.steps if s not in names]
    if unknown:
        from fedcl.errors import ConfigError

        raise ConfigError(f"unknown quickstart step(s) {unknown}; valid: {', '.join(names)}")
    timings = {}
    with run_folder(cfg.out, "quickstart") as tmp:
        save_config(tmp, cfg)
        for name in cfg.steps:
            t0 = time.perf_counter()
            (tmp / name).mkdir()
            print(_step_fn(names[name])(tmp / name, cfg.device), flush=True)
            timings[name] = time.perf_counter() - t0
            print(f"[{name}: {timings[name]:.0f} s]\n", flush=True)
        write_json(tmp / "metrics.json", {"seconds": timings})
    print(f"quickstart done in {sum(timings.values()):.0f} s -> {final_path(tmp)}")
    return 0
