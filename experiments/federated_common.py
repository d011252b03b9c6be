"""Shared helpers of the federated experiments: environment facts, peak memory of a process tree, tables."""

from __future__ import annotations

import os
import platform
import threading
import time
from importlib import metadata

__all__ = ["PeakMemory", "environment"]


def environment() -> dict[str, str]:
    """Device and package versions for the results files."""
    versions = {p: metadata.version(p) for p in ("torch", "flwr", "flwr-datasets", "ray", "opacus")}
    return {"device": f"CPU, {os.cpu_count()} cores, shared with other jobs (timings are noisy)",
            "python": platform.python_version(), **versions}


class PeakMemory:
    """Sample the RSS of this process and all its descendants (Ray workers included) every ``interval`` s."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
