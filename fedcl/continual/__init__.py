"""Continual learning: Avalanche benchmarks from fedcl datasets and the ``fedcl continual`` command.

Names are imported on first use, so ``strategies.replay`` can build its datasets with
:mod:`fedcl.continual.benchmarks` while :mod:`fedcl.continual.runner` imports ``strategies.replay``.
"""

from fedcl._lazy import lazy_attributes

_LAZY = {
    **dict.fromkeys(["BENCHMARKS", "Benchmark", "list_benchmarks", "make_benchmark", "register_benchmark"],
                    "fedcl.continual.benchmarks"),
    **dict.fromkeys(["ContinualConfig", "MemoryDistillConfig"], "fedcl.continual.config"),
    **dict.fromkeys(["STRATEGIES", "list_strategies", "register_strategy", "run_strategy"], "fedcl.continual.runner"),
}

__all__ = ["BENCHMARKS", "STRATEGIES", "Benchmark", "ContinualConfig", "MemoryDistillConfig", "list_benchmarks",
           "list_strategies", "make_benchmark", "register_benchmark", "register_strategy", "run_strategy"]

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
