"""Split digits (bundled 8x8): stock replay strategies vs distilled replay at memory 20 and 100, timed.

Target (issue 4): both memories, every strategy, under 5 minutes on a 2-core CPU.
    nice -n 10 .venv/bin/python experiments/continual_digits.py > experiments/results/continual_digits.log 2>&1 &
Writes experiments/results/continual_digits.md and .json (wall and CPU seconds next to the table).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from fedcl.config import load_config
from fedcl.continual.command import run
from fedcl.continual.config import ContinualConfig

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "experiments" / "results"


def main() -> None:
    import avalanche

    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows, t0, c0 = [], time.perf_counter(), time.process_time()
    for mem in (20, 100):
        cfg = load_config(ContinualConfig, [str(ROOT / "configs/continual/split_digits.yaml"), f"mem_size={mem}",
                                            "device=cpu", f"out=runs/continual_digits-mem{mem}"])
        m = run(cfg, log=lambda s: print(s, flush=True))
        for name, s in m["strategies"].items():
            rows.append({"memory": mem, "strategy": name, "final_accuracy": s["final_accuracy"]["mean"],
                         "forgetting": s["forgetting"]["mean"],
                         "distill_s_per_exp": sum(s["distill_seconds_per_experience"]) / 5,
                         "train_s_per_exp": sum(s["train_seconds_per_experience"]) / 5})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lines = ["## Split digits (bundled 8x8, 5 experiences of 2 classes), seed 0, configs/continual/split_digits.yaml", "",
             f"Whole comparison (both memories, {len(rows) // 2} strategies): **{wall:.0f} s wall, {cpu:.0f} s CPU** "
             f"on a 2-core CPU shared with other jobs (load average {__import__('os').getloadavg()[0]:.1f} at the end; "
             f"timings are noisy). torch {torch.__version__}, avalanche-lib {avalanche.__version__}, "
             f"python {platform.python_version()}.", "",
             "| memory | strategy | final accuracy | forgetting | distill s/exp | train s/exp |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['memory']} | {r['strategy']} | {r['final_accuracy']:.3f} | {r['forgetting']:.3f} | "
              f"{r['distill_s_per_exp']:.1f} | {r['train_s_per_exp']:.1f} |" for r in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    (RESULTS / "continual_digits.md").write_text(table)
    (RESULTS / "continual_digits.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
