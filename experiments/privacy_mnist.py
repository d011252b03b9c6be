"""Privacy/utility on MNIST-6k (first 6,000 MNIST training images, official test set).

DP distribution matching vs non-DP DM vs DP-SGD (Opacus) at delta = 1e-5, ipc 10, with the
membership-inference audit. Run in the background:

    nice -n 10 .venv/bin/python experiments/privacy_mnist.py > experiments/results/privacy_mnist.log 2>&1 &

Writes the sweep run folder to experiments/results/privacy_mnist/ (results.csv, metrics.json,
privacy_utility.png, audit.md) and prints the audit table. Settings are reduced from the
papers to fit a shared 2-core CPU; they are all in the run's config.yaml. Environment
overrides: SEEDS (e.g. "0,1,2"), ITERS, WIDTH, BATCH_REAL, EVAL_MODELS, EVAL_EPOCHS, DPSGD_EPOCHS,
THREADS, EPS ("1,8"), METHODS ("dm,dpsgd"), NODP (1/0), REPLAY, CENTER, POOL (the dm privacy block),
OUT (the run folder's name under experiments/results/, default privacy_mnist).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

from fedcl.privacy.sweep import SweepConfig, _validate, run_sweep
from fedcl.runs import run_folder, save_config

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("FEDCL_DATA", str(ROOT.parent / "shared" / "data"))


def main() -> int:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    seeds = [int(s) for s in os.environ.get("SEEDS", "0").split(",")]
    env = os.environ.get
    cfg = SweepConfig(dataset="mnist", epsilons=[float(e) for e in env("EPS", "1,8").split(",") if e],
                      methods=env("METHODS", "dm,dpsgd").split(","), seeds=seeds, ipc=10,
                      width=int(env("WIDTH", "32")), iterations=int(env("ITERS", "200")),
                      batch_real=int(env("BATCH_REAL", "64")), dp_lr_img=100.0,
                      dpsgd_epochs=int(env("DPSGD_EPOCHS", "5")), dpsgd_batch_size=256, dpsgd_lr=0.2,
                      audit_members=300, audit_shadows=2, audit_shadow_size=1000, device="cpu")
    cfg.nodp = env("NODP", "1") == "1"
    cfg.privacy.replay = int(env("REPLAY", str(cfg.privacy.replay)))
    cfg.privacy.center = env("CENTER", "1" if cfg.privacy.center else "0") == "1"
    cfg.privacy.pool = env("POOL", "1" if cfg.privacy.pool else "0") == "1"
    cfg.data.root = DATA
    cfg.eval.models = int(env("EVAL_MODELS", "2"))
    cfg.eval.epochs = int(env("EVAL_EPOCHS", "100"))
    _validate(cfg)
    with run_folder(str(ROOT / "experiments" / "results" / os.environ.get("OUT", "privacy_mnist")), "privacy_mnist") as folder:
        save_config(folder, cfg)
        run_sweep(cfg, folder, log=lambda s: print(s, flush=True))
        table = (folder / "audit.md").read_text()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
