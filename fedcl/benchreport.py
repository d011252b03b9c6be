"""The results.md of ``fedcl bench``: the device and versions, then each dataset's tables."""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["device_name", "environment", "results_markdown"]


def device_name(device: str = "auto") -> str:
    """The device in words: the GPU's name, or the CPU model with its cores and torch threads."""
    import torch

    from fedcl.utils import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu ({cpu + ', ' if cpu else ''}{os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def environment(device: str = "auto") -> dict[str, Any]:
    """``{device, versions, date}`` for metrics.json and results.md."""
    from fedcl.commands import versions

    return {"device": device_name(device), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M")}


def _pct(acc: dict[str, Any]) -> str:
    return f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"


def _gain(r: dict[str, Any]) -> str:
    gain = r.get("gain_over_random")
    if gain is None:
        return "n/a"
    return "baseline" if r["engine"] == "random" else f"{gain:+.2f}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _main_table(rows: list[dict[str, Any]], split: str, gains: bool) -> str:
    from fedcl.report import markdown_table

    header = ["engine", "ipc", f"{split} accuracy %", *(["gain over random (points)"] if gains else []),
              "iterations", "s / iteration", "distill s", "stored bytes", "decoded images"]
    body = [[r["engine"], r["ipc"], _pct(r["accuracy"]), *([_gain(r)] if gains else []), r["iterations"],
             _num(r["seconds_per_iteration"], ".3g"), _num(r["distill_seconds"], ".1f"), f"{r['stored_bytes']:,}",
             r["num_images"]] for r in rows]
    return markdown_table(header, body)


def _arch_table(rows: list[dict[str, Any]]) -> str:
    from fedcl.report import markdown_table

    archs = list(rows[0]["cross_arch"])
    body = [[r["engine"], r["ipc"], "soft" if r["soft_labels"] else "hard",
             *(_pct(r["cross_arch"][a]) for a in archs)] for r in rows]
    return markdown_table(["set", "ipc", "labels", *archs], body)


def _reused(metrics: dict[str, Any]) -> list[str]:
    """The lines that say which rows earlier runs made (``resume``), each with its command, date and device."""
    lines = []
    for o in metrics.get("resumed", []):
        rows = [r for r in metrics["rows"] if r.get("reused_from") == o["folder"]]
        if not rows:
            continue
        v = o.get("versions") or {}
        names = ", ".join(f"{r['engine']}{' (soft)' if r['soft_labels'] else ''} ipc {r['ipc']}"
                          + (f" ({', '.join(r['evaluated_here'])} evaluated in this run)" if r.get("evaluated_here")
                             else "") for r in rows)
        lines += [f"Reused from an earlier run under the same protocol ({len(rows)} of {len(metrics['rows'])} rows: "
                  f"{names}): `{o.get('command')}` ({o.get('date')}), device: {o.get('device')}, versions: "
                  + ", ".join(f"{k} {v[k]}" for k in ("fedcl", "torch", "python") if k in v) + ".", ""]
    return lines


def results_markdown(cfg: Any, metrics: dict[str, Any]) -> str:
    """The tables of a bench run, with the command, device, versions and protocol."""
    ev, split = cfg.eval, metrics["split"]
    v = metrics["versions"]
    lines = [
        "# Distillation benchmark", "",
        f"Command: `{metrics['command']}` ({metrics['date']}, {metrics['wall_seconds']:.0f} s wall)  ",
        f"Device: {metrics['device']}  ",
        f"Versions: fedcl {v['fedcl']}, torch {v['torch']}, python {v['python']}", "",
        *_reused(metrics),
        *([f"**Partial**: {len(metrics['rows'])} of {metrics['planned_rows']} rows; the run was still going (or was "
           "stopped) when this was written.", ""] if not metrics.get("complete", True) else []),
        f"Protocol, the same for every row: the set trains {ev.models} fresh `{cfg.model}` "
        f"network{'s' if ev.models != 1 else ''} "
        f"({ev.epochs} epochs of SGD, lr {ev.lr} divided by 10 at half, momentum 0.9, batch {ev.batch_size}, "
        f"DSA augmentation {'on' if ev.dsa else 'off'}); {split} accuracy in %, mean ± std over them; seed {cfg.seed}. "
        + ("The gain is in accuracy points over `random` at the same dataset and ipc under that identical "
           "protocol (DD-Ranking's improvement over random). " if cfg.gains else "")
        + "Soft-label rows have their own table: their `random` is the same random real images with the same "
          "soft-label initialisation (`dm` with 0 iterations), so a gain there is what the engine adds beyond "
          "the labels; their distill s includes that initialisation (a network trained on the real data), their "
          "s / iteration does not. Stored bytes count the stored tensors (soft labels included) as float32; decoded images "
          "are what the evaluation trains on. Each row is one distilled set (one seed); its options are in "
          "metrics.json.",
    ]
    for dataset in cfg.datasets:
        rows = [r for r in metrics["rows"] if r["dataset"] == dataset]
        for soft, title in ((False, "hard labels"), (True, "soft labels")):
            part = [r for r in rows if r["soft_labels"] == soft]
            if part:
                lines += ["", f"## {dataset}: {title}", "", _main_table(part, split, cfg.gains)]
        if len(rows[0]["cross_arch"]) > 1:
            lines += ["", f"## {dataset}: cross-architecture ({split} accuracy %, {ev.models} networks each)", "",
                      _arch_table(rows)]
    return "\n".join(lines) + "\n"
