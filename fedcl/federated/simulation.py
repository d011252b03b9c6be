"""Flower simulations the way flwr 1.42 runs them: ``flwr run`` of an app against a simulation SuperLink.

Flower deprecated the in-process ``flwr.simulation.run_simulation``; its documented route is
``flwr run APP CONNECTION`` against a SuperLink started with ``--simulation`` (what ``flwr run``
starts by itself for the ``:local:`` connection). :class:`LocalSimulation` does the same with
a SuperLink of its own: on a free port of 127.0.0.1, under a temporary ``FLWR_HOME``, stopped
on :meth:`~LocalSimulation.close`, so runs never meet a user's own local SuperLink or each other.

Each :meth:`~LocalSimulation.run` writes a Flower app folder holding only a pyproject.toml: the
components (fedcl's ServerApp and ClientApp, or a ClientApp of the caller's) and
``[tool.flwr.app.config]`` = the run config of the :class:`FederatedConfig`. The apps are
imported from this Python environment (``PYTHONPATH`` names the folder this ``fedcl`` was
imported from), Ray's resources come from ``--federation-config``, the ServerApp writes its
result to ``result-file`` and the Flower log goes to a file (echoed with ``-v``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import fedcl.errors as errors
from fedcl.federated.config import FederatedConfig, run_config_toml

__all__ = ["LocalSimulation", "simulate"]

_BIN = Path(sys.executable).parent
SERVER_APP = "fedcl.federated.server_app:app"
CLIENT_APP = "fedcl.federated.client_app:app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _executable(name: str) -> str:
    path = _BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


class LocalSimulation:
    """A private Flower simulation SuperLink; runs fedcl's app on it with ``flwr run``.

    Use it as a context manager (or call :meth:`close`); one SuperLink serves any number of
    :meth:`run` calls in turn.

    Args:
        startup_timeout: seconds to wait for the SuperLink to answer.
    """

    def __init__(self, startup_timeout: float = 120.0) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fedcl-simulation-"))
        self.home = self.folder / "flwr-home"
        self.home.mkdir()
        self.port = _free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "fedcl"\n\n[superlink.fedcl]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        import fedcl

        root = str(Path(fedcl.__file__).resolve().parents[1])  # so the app processes import this fedcl
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
                    "FEDCL_PROGRESS": "0", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}
        # Ray starts its workers (the simulated clients) at niceness 15, so that any other process on the
        # machine starves them (measured: a client with 5% of a core beside two ordinary jobs). Clients are
        # the workload: run them at the niceness of the rest (a user's RAY_worker_niceness still wins).
        self.env.setdefault("RAY_worker_niceness", "0")
        self._runs = 0
        #: the Flower log of the latest run (``flwr run --stream``: the ServerApp's and the clients' logs)
        self.last_log = ""
        self._log = open(self.folder / "superlink.log", "wb")  # noqa: SIM115 (closed in close())
        # the command `flwr run` itself starts for a `:local:` connection, on a port of ours and without
        # runtime dependency installation (the apps run in this environment)
        self._link = subprocess.Popen(
            [_executable("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port",
             str(self.port), "--disable-runtime-dependency-installation"],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder, start_new_session=True)
        self._startup_timeout = startup_timeout
        self._ready = False

    def __enter__(self) -> LocalSimulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ready(self) -> None:
        if self._ready:
            return
        import urllib.request

        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._link.poll() is not None:
                raise RuntimeError(f"the simulation SuperLink exited with code {self._link.returncode}:\n"
                                   f"{self._tail(self.folder / 'superlink.log')}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    self._ready = True
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the simulation SuperLink did not answer within {self._startup_timeout:.0f} s")

    @staticmethod
    def _tail(path: Path, lines: int = 25) -> str:
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])

    def run(self, cfg: FederatedConfig, client_app: str | None = None) -> dict[str, Any]:
        """``flwr run`` fedcl's app with ``cfg`` on ``cfg.num_clients`` simulated SuperNodes; wait for it.

        Args:
            cfg: the run's settings (validated by the caller; the ServerApp validates them again).
            client_app: the ClientApp the simulated SuperNodes run (default: fedcl's), as
                ``module:attribute`` (a module of this environment) or ``path/to/file.py:attribute``
                (the file ships in the app, as a Flower app's own modules do); it must answer the
                same messages as fedcl's.

        Returns:
            The ServerApp's result: ``{"strategies": {name: result}, "config": run config}``.

        Raises:
            FedclError: the ServerApp ended with one (a bad run-config value, a round below
                ``min_summaries``...), raised here again as the same class.
            RuntimeError: the run ended without a result (the message ends with the Flower log).
        """
        self._runs += 1
        app = self.folder / f"app-{self._runs}"
        app.mkdir()
        result = app / "result.json"
        client_ref = client_app or CLIENT_APP
        module, _, attribute = client_ref.rpartition(":")
        if module.endswith(".py"):
            shutil.copy(module, app / Path(module).name)
            client_ref = f"{Path(module).stem}:{attribute}"
        (app / "pyproject.toml").write_text(
            '[project]\nname = "fedcl-simulation"\nversion = "1.0.0"\ndescription = "fedcl federated"\n'
            'license = "Apache-2.0"\ndependencies = []\n\n'
            '[tool.flwr.app]\npublisher = "fedcl"\n\n'
            f'[tool.flwr.app.components]\nserverapp = "{SERVER_APP}"\nclientapp = "{client_ref}"\n\n'
            + run_config_toml(replace(cfg, result_file=str(result))))
        res = cfg.client_resources
        federation = (f"num-supernodes={cfg.num_clients} client-resources-num-cpus={res.num_cpus} "
                      f"client-resources-num-gpus={float(res.num_gpus)} init-args-num-cpus={max(1, cfg.threads * 2)}")
        if res.num_gpus > 0:
            import torch

            federation += f" init-args-num-gpus={torch.cuda.device_count()}"
        self._wait_ready()
        log_path = app / "flwr-run.log"
        verbose = logging.getLogger().isEnabledFor(logging.INFO)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([_executable("flwr"), "run", str(app), "fedcl", "--stream",
                                     "--federation-config", federation],
                                    stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=app,
                                    start_new_session=True)
            try:
                self._follow(proc, log_path, echo=verbose)
            except BaseException:  # Ctrl-C: stop the stream (the SuperLink and its run go in close())
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        self.last_log = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
        if not result.exists():
            raise RuntimeError(f"the Flower run ended without a result (flwr run exit code {proc.returncode}); "
                               f"its log ends:\n{self._tail(log_path)}")
        import json

        payload = json.loads(result.read_text())
        if "error" in payload:
            kind = getattr(errors, str(payload["error"].get("type")), None)
            kind = kind if isinstance(kind, type) and issubclass(kind, errors.FedclError) else errors.FedclError
            raise kind(str(payload["error"].get("message")))
        return payload

    @staticmethod
    def _follow(proc: subprocess.Popen, log_path: Path, *, echo: bool) -> None:
        """Wait for ``flwr run --stream`` to end (with the run), echoing its log when ``echo``."""
        seen = 0
        while True:
            done = proc.poll() is not None
            if echo:
                with open(log_path, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                seen += len(chunk)
                sys.stderr.write(chunk.decode(errors="replace"))
            if done:
                return
            time.sleep(0.5)

    def close(self) -> None:
        """Stop the SuperLink (and every process it started) and remove the temporary folder."""
        if self._link.poll() is None:
            os.killpg(self._link.pid, signal.SIGTERM)
            try:
                self._link.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._link.pid, signal.SIGKILL)
                self._link.wait()
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def simulate(cfg: FederatedConfig, client_app: str | None = None,
             simulation: LocalSimulation | None = None) -> dict[str, Any]:
    """Run every strategy of ``cfg`` in one Flower simulation run; return the ServerApp's result.

    Args:
        cfg: the settings.
        client_app: ``module:attribute`` of the simulated SuperNodes' ClientApp (default: fedcl's).
        simulation: a running :class:`LocalSimulation` to use (default: a new one, closed at the end).
    """
    if simulation is not None:
        return simulation.run(cfg, client_app)
    with LocalSimulation() as sim:
        return sim.run(cfg, client_app)
