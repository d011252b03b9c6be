"""The engine runs whose synthetic sets are pinned in ``tests/data/engine_reference.safetensors``.

The file was written by the engines as they stood before the real-data access layer
(issue 28) with ``python tests/engine_reference.py``; ``test_access_layer`` runs the same
configurations on today's code and checks that every engine, with and without DP, still
makes the same synthetic set for the same seed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

REFERENCE = Path(__file__).with_name("data") / "engine_reference.safetensors"

#: name -> (method, engine options, DP block or None)
RUNS: dict[str, tuple[str, dict, dict | None]] = {
    "dm": ("dm", {"iterations": 6, "batch_real": 32}, None),
    "dm_dp": ("dm", {"iterations": 6, "batch_real": 32, "lr_img": 100.0}, {"epsilon": 2.0}),
    "gm": ("gm", {"iterations": 2, "batch_real": 16}, None),
    "gm_dp": ("gm", {"iterations": 2, "batch_real": 16}, {"epsilon": 2.0}),
    "dsa": ("dsa", {"iterations": 2, "batch_real": 16}, None),
    "dsa_dp": ("dsa", {"iterations": 2, "batch_real": 16}, {"epsilon": 2.0}),
}
IPC = 2


def run(name: str) -> torch.Tensor:
    """The synthetic images of run ``name`` on the bundled digits (CPU, one thread, seed 3)."""
    from fedcl import create_distiller, load_dataset
    from fedcl.privacy import PrivacyConfig

    method, opts, dp = RUNS[name]
    data = load_dataset("digits")
    # DP runs start from noise (what a DP run must do; before issue 28 an explicit init="noise" was needed)
    init = {"init": "noise"} if dp else {}
    engine = create_distiller(method, model_kwargs={"width": 16}, device="cpu", seed=3, progress=False, **init, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        syn = engine.distill(data.train_images, data.train_labels, IPC, num_classes=data.num_classes,
                             privacy=PrivacyConfig(**dp) if dp else None,
                             meta={"dataset": data.name, "mean": list(data.mean), "std": list(data.std)})
    return syn.images


if __name__ == "__main__":
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    REFERENCE.parent.mkdir(exist_ok=True)
    save_file({name: run(name).contiguous() for name in RUNS}, str(REFERENCE),
              metadata={"torch": torch.__version__, "argv": " ".join(sys.argv)})
    print(f"wrote {REFERENCE}")
