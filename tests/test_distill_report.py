"""The distillation report renders CPU and GPU parts side by side (experiments/distill_report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from distill_report import write_report  # noqa: E402

ENV = {"device": "cpu", "cpu": "x", "cpu_count": 2, "torch_threads": 2, "load_avg_1m": 0.1, "amx": False,
       "torch": "t", "torchvision": "tv", "numpy": "n", "python": "p", "fedcl": "f"}
GPU_ENV = {**ENV, "device": "cuda", "gpu": "Some GPU"}


def _row(method: str, acc: float) -> dict:
    return {"dataset": "mnist", "method": method, "ipc": 10, "iterations": 5 if method == "dsa" else 0,
            "batch_real": 256, "distill_seconds": 1.0, "acc": {"mean": acc, "std": 0.001, "n_models": 5, "epochs": 300}}


def test_gpu_parts_get_their_own_sections(tmp_path: Path) -> None:
    speed = {"engine": "dm", "median_s": 0.019, "min_s": 0.018, "cpu_median_s": 0.019, "n": 27}
    res = {"mnist": {"rows": [_row("random", 0.95), _row("dsa", 0.96)], "env": ENV},
           "mnist_gpu": {"rows": [_row("random", 0.955), _row("dsa", 0.978)], "env": GPU_ENV},
           "speed_gpu": {"rows": [speed], "env": GPU_ENV}}
    write_report(res, tmp_path)
    md = (tmp_path / "distill.md").read_text()
    assert "## MNIST-6k, ConvNet\n" in md and "## MNIST-6k, ConvNet, on a GPU" in md
    assert "device cuda (Some GPU)" in md
    assert "| dsa | 10 | 5 | 256 | 1 | 5 x 300 ep | 97.80 ± 0.10 | +2.30 |" in md  # gap to the GPU run's random
    assert "| dm | 0.019 | 0.018 | 0.019 | 27 |" in md  # hundredths of a second keep three decimals
    assert (tmp_path / "distill_mnist_gpu.csv").exists() and (tmp_path / "distill_mnist.csv").exists()
    assert "`--part speed`" in md  # the CPU speed part is still missing, and said so
