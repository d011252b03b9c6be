"""The ``fedcl`` console script: ``fedcl COMMAND [CONFIG.yaml] [key=value ...]``.

Every expected failure (a FedclError: bad config, missing data, privacy budget...) ends
with one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from fedcl.errors import FedclError

__all__ = ["COMMANDS", "main"]

# command -> "module:function"; each function takes the remaining argv and returns an exit code
COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("fedcl.commands:distill_main", "distill a dataset, evaluate it, write a run folder"),
    "evaluate": ("fedcl.commands:evaluate_main", "evaluate a saved synthetic set on one or more architectures"),
    "continual": ("fedcl.continual.command:main", "Avalanche benchmarks with distilled and stock replay"),
    "federated": ("fedcl.federated.command:main", "Flower simulation with distilled client summaries"),
    "privacy-sweep": ("fedcl.privacy.sweep:main", "privacy/utility sweep over epsilon and methods"),
    "audit": ("fedcl.privacy.audit:main", "membership-inference audit of trained models"),
    "quickstart": ("fedcl.quickstart:main", "the short tour on the bundled digits"),
}


def _usage() -> str:
    lines = ["usage: fedcl COMMAND [CONFIG.yaml] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<14} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[list[str]], int]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedcl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from fedcl import __version__

        print(f"fedcl {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fedcl: error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(_resolve(COMMANDS[name][0])(rest) or 0)
    except FedclError as exc:
        print(f"fedcl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedcl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
