"""The continual step of ``fedcl quickstart``: stock vs distilled replay on split digits, small and fast."""

from __future__ import annotations

from pathlib import Path

__all__ = ["continual_step"]


def continual_step(out: Path, device: str) -> str:
    """Split digits, memory 20 (2 images per class at the end): stock class-balanced replay vs distilled (dm)."""
    from fedcl.config import load_config
    from fedcl.continual.command import run
    from fedcl.continual.config import ContinualConfig
    from fedcl.continual.report import results_table

    cfg = load_config(ContinualConfig, [
        # about 50 CPU-seconds at 1 thread (measured; most of it distilling): dm matches with a width-32 network (random
        # networks: width barely changes the memory, 16x fewer FLOPs); 150 epochs of fresh training on the memory
        "benchmark=split_digits", "strategies=[naive,replay,distilled]", "mem_size=20", "epochs=5",
        "distill.iterations=100", "distill.model_kwargs={width:32}", "distill.gdumb_epochs=150", f"device={device}",
        f"out={out / 'continual'}"])
    metrics = run(cfg, log=lambda _msg: None)
    return "Continual learning on split digits (5 experiences of 2 classes, memory 20):\n" + results_table(metrics)
