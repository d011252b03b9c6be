"""The ``fedcl`` console script: ``fedcl COMMAND [CONFIG.yaml] [key=value ...]``.

``fedcl COMMAND --help`` lists the command's keys (generated from its config dataclass);
``fedcl COMMAND --show-config [CONFIG.yaml] [key=value ...]`` prints the resolved config
as YAML without running. Every expected failure (a FedclError: bad config, missing data,
privacy budget...) ends with one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedcl.errors import ConfigError, FedclError

__all__ = ["COMMANDS", "Command", "main"]


@dataclass(frozen=True)
class Command:
    """One ``fedcl`` command.

    Attributes:
        target: ``module:function`` that takes the remaining argv and returns an exit code.
        config: ``module:Class`` of the command's structured config (its keys, help and defaults).
        doc: one line for ``fedcl --help``.
        args: extra arguments the command takes besides the config (``(usage, help)`` pairs).
        to_config: ``module:function`` mapping the command's argv to ``[CONFIG.yaml] [key=value ...]``
            (for ``--show-config``) when the command has arguments of its own.
        resolve: ``module:function`` that fills the defaults the command derives from other keys
            (``--show-config`` prints what the run would use).
    """

    target: str
    config: str
    doc: str
    args: tuple[tuple[str, str], ...] = ()
    to_config: str | None = None
    resolve: str | None = None


COMMANDS: dict[str, Command] = {
    "distill": Command("fedcl.commands:distill_main", "fedcl.config:DistillConfig",
                       "distill a dataset, evaluate it, write a run folder", resolve="fedcl.commands:resolve_schedule"),
    "evaluate": Command("fedcl.commands:evaluate_main", "fedcl.commands:EvaluateConfig",
                        "evaluate a saved synthetic set on one or more architectures, or test a saved model",
                        args=(("PATH", "a synthetic.safetensors or a saved model (model.safetensors) written by fedcl"),
                              ("[--model A,B]", "architectures, comma-separated (same as models=[A,B])")),
                        to_config="fedcl.commands:evaluate_config_argv"),
    "continual": Command("fedcl.continual.command:main", "fedcl.continual.config:ContinualConfig",
                         "Avalanche benchmarks with distilled and stock replay"),
    "federated": Command("fedcl.federated.command:main", "fedcl.federated.command:FederatedConfig",
                         "Flower simulation with distilled client summaries"),
    "privacy-sweep": Command("fedcl.privacy.sweep:main", "fedcl.privacy.sweep:SweepConfig",
                             "privacy/utility sweep over epsilon and methods"),
    "audit": Command("fedcl.privacy.audit:main", "fedcl.privacy.sweep:SweepConfig",
                     "membership-inference audit of trained models"),
    "bench": Command("fedcl.bench:main", "fedcl.bench:BenchConfig",
                     "distillation tables: engines x datasets x ipc under one evaluation protocol",
                     args=(("[--quick]", "a few-minute CPU version: digits, ipc 1 and 10, short schedules, "
                                         "2 evaluation models of 100 epochs, no ResNet-18"),),
                     to_config="fedcl.bench:bench_config_argv"),
    "quickstart": Command("fedcl.quickstart:main", "fedcl.quickstart:QuickstartConfig",
                          "the short tour on the bundled digits"),
}

_OPTIONS = [
    ("-h, --help", "list the command's keys with type, default and description"),
    ("--show-config", "print the resolved config as YAML and exit without running"),
    ("-v, --verbose", "show INFO logs (Flower, fedcl); the default shows warnings only"),
    ("-V, --version", "print the version"),
]


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    lines = ["usage: fedcl [-v] COMMAND [CONFIG.yaml] [key=value ...]",
             "       fedcl COMMAND --help | --show-config [CONFIG.yaml] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<14} {cmd.doc}" for name, cmd in COMMANDS.items()]
    lines += ["", "options:"] + [f"  {opt:<14} {doc}" for opt, doc in _OPTIONS]
    lines += ["", "'fedcl COMMAND --help' lists every key of COMMAND; nested keys are dotted (eval.epochs=100)."]
    return "\n".join(lines)


def command_help(name: str) -> str:
    """The ``fedcl NAME --help`` text: usage, then every key of the command's config."""
    from fedcl.confighelp import format_keys

    cmd = COMMANDS[name]
    extra = " ".join(usage for usage, _ in cmd.args)
    extra = f"{extra} " if extra else ""
    lines = [f"usage: fedcl {name} {extra}[CONFIG.yaml] [key=value ...]",
             f"       fedcl {name} --show-config {extra}[CONFIG.yaml] [key=value ...]",
             "", cmd.doc, ""]
    if cmd.args:
        lines += ["arguments:"] + [f"  {usage:<14} {doc}" for usage, doc in cmd.args] + [""]
    lines += ["keys (set as key=value, or in CONFIG.yaml; nested keys dotted):", format_keys(_resolve(cmd.config))]
    return "\n".join(lines)


def show_config(name: str, argv: list[str]) -> str:
    """The resolved config of ``fedcl NAME argv`` as YAML (validated as a run would be; nothing runs)."""
    from fedcl.config import config_to_yaml, load_config

    cmd = COMMANDS[name]
    if cmd.to_config:
        argv = _resolve(cmd.to_config)(argv)
    cfg = load_config(_resolve(cmd.config), argv)
    if cmd.resolve:
        cfg = _resolve(cmd.resolve)(cfg)
    return config_to_yaml(cfg)


# Library warnings a CLI user cannot act on, silenced by message and module (not a blanket ignore).
_QUIET_WARNINGS: list[dict[str, Any]] = [
    # qpsolvers, imported by Avalanche's GEM strategy, which fedcl does not use
    {"message": "no QP solver found", "category": UserWarning, "module": "qpsolvers"},
    # Ray at ray.init: a tip about a future default (fedcl sets each client's device itself)
    {"message": "Tip: In future versions of Ray", "category": FutureWarning, "module": "ray"},
]


# Flower warnings about choices fedcl makes on purpose, not the user (so nothing to act on)
_FLOWER_NOTICES = (
    # fedcl's FedAvg evaluates the global model on the server only (fedcl/federated/server_app.py)
    "fraction_evaluate is set to 0.0",
)


class _FlowerFilter(logging.Filter):
    """Keeps Flower's records at ``level`` and above, minus the notices in ``_FLOWER_NOTICES``.

    A filter on the logger (not its level): importing flwr resets the ``flwr`` logger to DEBUG.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        message = record.getMessage()
        return not any(notice in message for notice in _FLOWER_NOTICES)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (which tests and tools may replace), not the one at creation."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_output(verbose: bool = False) -> None:
    """Quiet by default: warnings only (INFO with ``verbose``), each log line once, no library warnings."""
    import warnings

    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_fedcl", False) for h in root.handlers):
        # a root handler of ours first also stops Opacus's import-time basicConfig from adding another
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._fedcl = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for h in root.handlers:
        if getattr(h, "_fedcl", False):
            h.setLevel(level)
    root.setLevel(level)
    flwr = logging.getLogger("flwr")  # Ray's driver logs follow the simulation's logging_level (WARNING)
    for f in [f for f in flwr.filters if isinstance(f, _FlowerFilter)]:
        flwr.removeFilter(f)
    flwr.addFilter(_FlowerFilter(level))
    flwr.propagate = False  # Flower prints through its own handler: once, not twice
    for spec in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", **spec)


def _pop_flags(argv: list[str], *flags: str) -> tuple[list[str], bool]:
    kept = [a for a in argv if a not in flags]
    return kept, len(kept) != len(argv)


def _run(argv: list[str]) -> int:
    argv, verbose = _pop_flags(argv, "-v", "--verbose")
    configure_output(verbose)
    if not argv or argv[0] in ("-h", "--help", "help"):
        if len(argv) > 1 and argv[0] == "help":
            argv = [argv[1], "--help"]
        else:
            print(_usage())
            return 0
    if argv[0] in ("-V", "--version"):
        from fedcl import __version__

        print(f"fedcl {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise ConfigError(f"unknown command {name!r}; valid: {', '.join(COMMANDS)} (fedcl --help lists them)")
    rest, want_help = _pop_flags(rest, "-h", "--help")
    if want_help:
        print(command_help(name))
        return 0
    rest, want_config = _pop_flags(rest, "--show-config")
    if want_config:
        print(show_config(name, rest), end="")
        return 0
    fn: Callable[[list[str]], int] = _resolve(COMMANDS[name].target)
    return int(fn(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedcl`` console script; returns the exit code (2 on bad input)."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except FedclError as exc:
        print(f"fedcl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedcl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
