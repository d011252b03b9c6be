"""Merge privacy-sweep / audit run folders that ran the same config on different seeds.

    .venv/bin/python experiments/merge_sweeps.py OUT RUN_A RUN_B [...]

A study split over seeds (one process per seed, e.g. ``seeds=[0]`` and ``seeds=[1]``) gets one
run folder: the rows of every part, summarised over seeds (mean ± std, AUC standard errors)
by the sweep's own writer, and the first part's config with the merged seed list. Settings
other than ``seeds``/``out`` must be equal; the merge refuses otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedcl.privacy.report import write_outputs


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    out, parts = Path(argv[0]), [Path(p) for p in argv[1:]]
    metrics = [json.loads((p / "metrics.json").read_text()) for p in parts]
    first = metrics[0]["config"]
    for p, m in zip(parts[1:], metrics[1:]):
        diff = {k for k in first if k not in ("seeds", "out") and first[k] != m["config"].get(k)}
        if diff:
            print(f"error: {p} differs from {parts[0]} in {sorted(diff)}", file=sys.stderr)
            return 1
    rows = [r for m in metrics for r in m["rows"]]
    config = {**first, "seeds": sorted({r["seed"] for r in rows}), "out": str(out)}
    merged = {"dataset": metrics[0]["dataset"], "train_size": metrics[0]["train_size"], "rows": rows,
              "total_seconds": sum(m["total_seconds"] for m in metrics), "config": config,
              # a part that is itself a merge (seeds added later) lists the runs it came from
              "merged_from": [src for p, m in zip(parts, metrics) for src in m.get("merged_from", [str(p)])]}
    out.mkdir(parents=True, exist_ok=True)
    head = [line for line in (parts[0] / "config.yaml").read_text().splitlines(keepends=True)
            if not line.startswith("# merged by experiments/merge_sweeps.py")]
    (out / "config.yaml").write_text("".join(head) + f"# merged by experiments/merge_sweeps.py from "
                                     f"{len(merged['merged_from'])} runs; seeds {config['seeds']}\n")
    write_outputs(out, rows, merged)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
