"""The privacy step of ``fedcl quickstart``: a DP synthetic set of digits and its ledger."""

from __future__ import annotations

from pathlib import Path

__all__ = ["privacy_step"]


def privacy_step(out: Path, device: str) -> str:
    """Distill digits with DP dm at epsilon = 2, evaluate it, and charge it to a ledger of budget 2.5.

    50 private steps, then the default 4 replay passes over their released targets
    (post-processing), keep it short on a 2-core CPU.
    """
    from fedcl.data import load_dataset
    from fedcl.distill import create_distiller
    from fedcl.errors import PrivacyError
    from fedcl.evaluate import evaluate_synthetic
    from fedcl.privacy.access import plan_release
    from fedcl.privacy.config import PrivacyConfig
    from fedcl.privacy.ledger import PrivacyLedger
    from fedcl.runs import write_json

    data = load_dataset("digits")
    folder = out / "privacy"
    folder.mkdir(parents=True, exist_ok=True)
    privacy = PrivacyConfig(epsilon=2.0)
    dist = create_distiller("dm", iterations=50, batch_real=32, lr_img=100.0, init="noise", device=device,
                            progress=False, model_kwargs={"width": 32})
    ledger = PrivacyLedger(epsilon=2.5, owner="digits")
    plan = plan_release(dist, data.class_counts(), 10, privacy)
    ledger.check(plan, "dp-dm")  # before any data is touched
    syn = dist.distill(data.train_images, data.train_labels, 10, privacy=privacy,
                       meta={"dataset": data.name, "mean": list(data.mean), "std": list(data.std)})
    ledger.record(syn.meta["privacy"], name="dp-dm")
    try:
        ledger.check(plan, "a second release")
        refused = "accepted"
    except PrivacyError:
        refused = f"refused (it would bring epsilon to {ledger.would_spend(plan):.2f} under RDP composition)"
    acc = evaluate_synthetic(syn, data, n_models=2, epochs=100, device=device, model_kwargs={"width": 32})
    syn.save(folder / "synthetic.safetensors")
    write_json(folder / "metrics.json", {"test_accuracy": acc.as_dict(), "privacy": syn.meta["privacy"],
                                         "ledger": ledger.to_dict()})
    p = syn.meta["privacy"]
    return (f"DP distribution matching on digits, ipc 10: epsilon {p['epsilon']:.2f} (delta {p['delta']:g}, noise "
            f"multiplier {p['noise_multiplier']:.2f}, {p['steps']} steps at q={p['sample_rate']:.3f}); test accuracy "
            f"{acc.mean:.3f} ± {acc.std:.3f}. Ledger (budget 2.5): spent {ledger.spent():.2f}; a second identical "
            f"release is {refused}.")
