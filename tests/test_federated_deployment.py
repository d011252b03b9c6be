"""Real deployment: a flower-superlink and three flower-supernode processes on 127.0.0.1, the app run with `flwr run`.

Each test starts its own processes on free ports (each in its own process group, killed in
teardown), writes a Flower config under a temporary FLWR_HOME, runs ``flwr run . <conn>``
against the repository and reads the ServerApp's result file.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = "iterations=5 width=16 server-epochs=40 batch-real=32"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_certs(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key_pem(key))
    return paths


def make_node_key(path: Path) -> tuple[Path, Path]:
    """A SuperNode's ECDSA (P-384) key pair as Flower reads it: the private key in OpenSSH PEM
    (``--auth-supernode-private-key``), the public key in OpenSSH format (``flwr supernode register``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub = path.with_suffix(".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return path, pub


class Federation:
    """One SuperLink and ``n`` SuperNodes, killed (whole process groups) on :meth:`close`.

    ``node_configs``: each SuperNode's ``--node-config`` (default: ``partition-id=i num-partitions=n``).
    ``auth``: SuperNode authentication (needs ``tls``): the SuperLink runs with
    ``--enable-supernode-auth``, every node with its own key; the keys of the nodes not in
    ``unregistered`` are registered with ``flwr supernode register`` before the nodes start.
    """

    def __init__(self, tmp: Path, n: int = 3, tls: bool = False, node_configs: list[str] | None = None,
                 auth: bool = False, unregistered: tuple[int, ...] = ()) -> None:
        self.tmp, self.procs = tmp, []
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_HOME": str(tmp / "flwr-home"), "FEDCL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        self.port = _free_port()
        sec = ["--insecure"]
        node_sec = ["--insecure"]
        conn = "insecure = true"
        if tls:
            certs = _make_certs(tmp)
            sec = ["--ssl-certfile", str(certs["cert"]), "--ssl-keyfile", str(certs["key"]),
                   "--ssl-ca-certfile", str(certs["ca"])]
            node_sec = ["--root-certificates", str(certs["ca"])]
            conn = f'root-certificates = "{certs["ca"]}"'
        home = tmp / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
                                          f'address = "127.0.0.1:{self.port}"\n{conn}\n')
        self.link = self._start("superlink", [str(BIN / "flower-superlink"), *sec, "--host", "127.0.0.1", "--port",
                                              str(self.port), "--database", ":flwr-in-memory:",
                                              "--disable-runtime-dependency-installation",
                                              *(["--enable-supernode-auth"] if auth else [])])
        node_configs = node_configs or [f"partition-id={i} num-partitions={n}" for i in range(n)]
        keys: list[list[str]] = [[] for _ in node_configs]
        if auth:
            for i in range(len(node_configs)):
                private, public = make_node_key(tmp / f"node{i}.key")
                keys[i] = ["--auth-supernode-private-key", str(private)]
                if i not in unregistered:
                    self.register(public)
        self.nodes = [self._start(f"supernode{i}", [
            str(BIN / "flower-supernode"), *node_sec, "--superlink", f"127.0.0.1:{self.port}", "--port",
            str(_free_port()), *keys[i], "--node-config", cfg]) for i, cfg in enumerate(node_configs)]

    def register(self, public_key: Path, timeout: float = 30) -> None:
        """``flwr supernode register KEY test``, retried while the SuperLink starts."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(public_key), "test"],
                                  capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=60)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"flwr supernode register failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
            time.sleep(1)

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp,
                                start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def run(self, run_config: str, *, timeout: float = 240, on_line=None) -> dict:
        """``flwr run . test --stream`` with ``run_config``; returns the ServerApp's result JSON (raises on an
        ``error`` result)."""
        result = self.tmp / "result.json"
        cmd = [str(BIN / "flwr"), "run", str(REPO), "test", "--stream", "--run-config",
               f"{run_config} result-file='{result}'"]
        out = open(self.tmp / "flwr-run.log", "w+b")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                start_new_session=True)
        self.procs.append((proc, out))
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if on_line is not None:
                on_line((self.tmp / "flwr-run.log").read_text(errors="replace"))
            if result.exists():
                break
            time.sleep(1)
        for _ in range(10):  # the result file is written just before the run ends
            if result.exists() and result.stat().st_size:
                break
            time.sleep(1)
        if not result.exists():
            logs = (self.tmp / "flwr-run.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"no result within {timeout} s; flwr run output:\n{logs}")
        time.sleep(0.5)
        payload = json.loads(result.read_text())
        if "error" in payload:
            pytest.fail(f"the ServerApp ended with an error: {payload['error']}")
        return payload

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a process and every process it started (its own session)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                self.kill(proc)
            log.close()


@pytest.fixture
def federation(tmp_path):
    feds = []

    def make(**kw) -> Federation:
        fed = Federation(tmp_path, **kw)
        feds.append(fed)
        return fed

    yield make
    for fed in feds:
        fed.close()


def test_flwr_run_three_supernodes_insecure(federation):
    fed = federation(n=3)
    r = fed.run(f"strategies='oneshot' num-clients=3 ipc=5 {TINY}")["strategies"]["oneshot"]
    assert r["strategy"] == "oneshot" and r["rounds"] == 1
    assert r["dropped_summaries"] == 0
    assert len(r["bytes_per_client"]["1"]) == 3  # three SuperNodes answered
    assert r["uplink_bytes"] > 0 and r["summary_images"] > 0
    assert r["final_accuracy"] > max(0.12, r["accuracy_per_round"][0])  # learned something (chance: 0.1)


def test_flwr_run_with_tls(federation):
    fed = federation(n=3, tls=True)
    r = fed.run(f"strategies='oneshot' num-clients=3 ipc=3 {TINY}")["strategies"]["oneshot"]
    assert len(r["bytes_per_client"]["1"]) == 3
    assert r["dropped_summaries"] == 0 and r["final_accuracy"] > max(0.12, r["accuracy_per_round"][0])
    assert "TLS disabled" not in (fed.tmp / "superlink.log").read_text(errors="replace")


def test_run_completes_when_a_supernode_dies(federation):
    fed = federation(n=3)
    killed = []

    def kill_in_round_two(log: str) -> None:
        if not killed and "[ROUND 2/3]" in log:
            fed.kill(fed.nodes[2])
            killed.append(True)

    r = fed.run(f"strategies='fedavg' rounds=3 num-clients=2 round-timeout=120.0 local-epochs=1 {TINY}",
                timeout=560, on_line=kill_in_round_two)["strategies"]["fedavg"]
    assert killed, "the run finished before round 2 started"
    assert r["rounds"] == 3 and len(r["accuracy_per_round"]) == 4
    answered = {k: {n for n, v in r["bytes_per_client"][str(k)].items() if v["up"] > 0} for k in (1, 2, 3)}
    diag = (r["bytes_per_client"], r["accuracy_per_round"])
    assert len(answered[1]) == 3, diag  # all three trained in round 1
    assert len(answered[3]) == 2 and answered[3] < answered[1], diag  # the two survivors carried on
    assert r["final_accuracy"] > r["accuracy_per_round"][0], diag


@pytest.mark.parametrize("server_test", [True, False])
def test_supernodes_distil_their_own_image_folders(federation, tmp_path, server_test):
    from node_images import CLASSES, make_folder

    from fedcl.data.imagefolder import load_image_folder
    from fedcl.models.saved import load_model
    from fedcl.train import accuracy

    server = make_folder(tmp_path / "server", per_class=2, seed=100, test=10)  # the server's test set
    # each node holds two of the three classes, its own images; the run's label space is all three
    nodes = [make_folder(tmp_path / f"node{i}", [CLASSES[i], CLASSES[(i + 1) % 3]], per_class=12, seed=i)
             for i in range(3)]
    configs = [f'data-path="{p}"' for p in nodes] + [f'data-path="{tmp_path / "no-such-folder"}"']
    fed = federation(n=4, node_configs=configs)
    data = (f"data.root='{server}'" if server_test  # else: the server holds no data, the run config says its shape
            else "data.server-test=false data.image-size=8 data.channels=1")
    payload = fed.run(f"strategies='oneshot' num-clients=4 ipc=3 dataset='imagefolder' {data} "
                      f"data.classes='{','.join(CLASSES)}' model-dir='{tmp_path / 'model'}' {TINY}")
    r = payload["strategies"]["oneshot"]
    diag = (r["dropped"], r["bytes_per_client"], r["accuracy_per_round"])
    assert len(r["bytes_per_client"]["1"]) == 4, diag  # four nodes were asked
    assert r["dropped_summaries"] == 1 and "no-such-folder: no such folder" in r["dropped"][0]["reason"], diag
    assert r["summary_class_images"] == [6, 6, 6], diag  # the union: each class from the two nodes holding it
    assert "node0" not in json.dumps(payload["config"])  # the server never names a node's data
    if server_test:
        assert r["final_accuracy"] > max(0.6, r["accuracy_per_round"][0]), diag  # chance: 1/3
    else:
        assert r["final_accuracy"] is None and r["accuracy_per_round"] == [], diag
    model, _ = load_model(tmp_path / "model" / "model.safetensors")  # the global model learned the union
    test = load_image_folder(server)
    assert accuracy(model, test.test_images, test.test_labels) > 0.6, diag


def test_only_registered_supernodes_join(federation):
    fed = federation(n=4, tls=True, auth=True, unregistered=(3,),
                     node_configs=[f"partition-id={i} num-partitions=4" for i in range(4)])
    r = fed.run(f"strategies='oneshot' num-clients=3 ipc=2 {TINY}")["strategies"]["oneshot"]
    assert len(r["bytes_per_client"]["1"]) == 3 and r["dropped_summaries"] == 0  # the three registered nodes
    assert r["final_accuracy"] > max(0.12, r["accuracy_per_round"][0])
    refused = (fed.tmp / "supernode3.log").read_text(errors="replace")
    assert fed.nodes[3].wait(timeout=30) != 0, refused[-2000:]  # Flower logs its exit code 305: not activated
    assert "Exit Code: 305" in refused and "Failed to activate SuperNode" in refused


def test_a_bad_node_key_ends_the_supernode_with_one_line(tmp_path):
    bad = tmp_path / "node.key"
    bad.write_text("not a key\n")
    proc = subprocess.run([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{_free_port()}",
                           "--auth-supernode-private-key", str(bad), "--node-config", 'data-path="/nowhere"'],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "FLWR_HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert "Unable to parse the private key file" in proc.stdout + proc.stderr
    # the operator's side: registering a file that is no public key
    proc = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(bad), "test"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "FLWR_HOME": str(tmp_path)})
    assert proc.returncode != 0 and "public key" in (proc.stdout + proc.stderr).lower()
