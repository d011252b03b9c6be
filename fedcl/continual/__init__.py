"""Continual learning: Avalanche benchmarks from fedcl datasets and the ``fedcl continual`` command."""

from fedcl.continual.benchmarks import BENCHMARKS, Benchmark, list_benchmarks, make_benchmark, register_benchmark
from fedcl.continual.config import ContinualConfig, MemoryDistillConfig
from fedcl.continual.runner import STRATEGIES, list_strategies, register_strategy, run_strategy

__all__ = ["BENCHMARKS", "STRATEGIES", "Benchmark", "ContinualConfig", "MemoryDistillConfig", "list_benchmarks",
           "list_strategies", "make_benchmark", "register_benchmark", "register_strategy", "run_strategy"]
