"""How much of a DP one-shot result is the server's own randomness, and what an ensemble would add.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/federated_dp_ensemble.py --seed 3 --models 4 \
        [--cache /tmp/fedcl_dp_ablation --tag base]

On the cached union of the clients' summaries of ``federated_dp_ablation.py`` (same ``--cache`` and
``--tag``; the config's clients when the tag is ``base``), the server of
``configs/federated/dp_oneshot_mnist.yaml`` (``server_noise=2``, 2,000 epochs) is trained ``--models``
times with other seeds for its initialisation and its training randomness. Model 0 is the config's
own draw. One JSON line per model: its test accuracy and that of the ensemble of models 0..m
(averaged softmax), appended to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from federated_dp_ablation import add_cache_args, cache_file, settings

from fedcl.federated.task import load_data, make_model, train_global


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(p)
    p.add_argument("--models", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    cache = cache_file(args.cache, args.tag, args.seed)
    if not cache.exists():
        raise SystemExit(f"{cache} is missing: run federated_dp_ablation.py --seed {args.seed} --tag {args.tag} first")
    blob = torch.load(cache, weights_only=True)
    s = settings(args.seed, args.root, ["server_epochs=2000", "server_noise=2.0"])
    data = load_data(s.dataset, s.data_root)
    probs = []
    for m in range(args.models):
        t0 = time.perf_counter()
        model = make_model(s, data, seed=s.seed + 1000 * m)
        acc = train_global(s, model, blob["x"], blob["y"], data, epochs=s.server_epochs, seed=s.seed + 1 + 1000 * m)
        model.eval()
        with torch.no_grad():
            probs.append(torch.cat([model(x).softmax(1) for x in data.test_images.split(2000)]))
        ensemble = (torch.stack(probs).mean(0).argmax(1) == data.test_labels).float().mean().item()
        rec = {"tag": f"{args.tag}+ensemble", "seed": s.seed, "server": "noise2.0", "model": m,
               "model_seed": s.seed + 1000 * m, "train_seed": s.seed + 1 + 1000 * m, "accuracy": acc,
               "ensemble_accuracy": round(ensemble, 4), "ensemble_models": m + 1,
               "seconds": round(time.perf_counter() - t0)}
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
