"""Pictures and tables for run folders (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fedcl.distill.synthetic import SyntheticSet

__all__ = ["markdown_table", "save_grid"]


def save_grid(synthetic: SyntheticSet, path: str | Path, *, max_per_class: int = 20) -> Path:
    """Save the synthetic images de-normalised, one row per class, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = synthetic.denormalized()
    classes = sorted(set(synthetic.hard_labels.tolist()))
    cols = min(max(synthetic.class_counts()), max_per_class)
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * 0.8 + 0.4, len(classes) * 0.8 + 0.2), squeeze=False)
    for r, c in enumerate(classes):
        idx = torch.nonzero(synthetic.hard_labels == c).flatten()[:cols]
        for k in range(cols):
            ax = axes[r][k]
            ax.axis("off")
            if k < len(idx):
                img = images[idx[k]].permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0, vmax=1)
    fig.suptitle(f"{synthetic.meta.get('method', '')} {synthetic.meta.get('dataset', '')} ipc={cols}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
