"""The real-data access layer (issue 28): one door to real data for every engine, exact or private."""

from __future__ import annotations

import subprocess
import sys
import warnings

import engine_reference as ref
import pytest
import torch

from fedcl import create_distiller
from fedcl.distill.access import RealAccess
from fedcl.errors import ConfigError, PrivacyError
from fedcl.privacy import PrivacyConfig


@pytest.mark.parametrize("name", sorted(ref.RUNS))
def test_engines_make_the_sets_they_made_before_the_access_layer(name: str) -> None:
    """dm, gm and dsa, with and without DP, give the synthetic sets pinned before the refactor."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    pinned = load_file(str(ref.REFERENCE))[name]
    now = ref.run(name)
    assert now.shape == pinned.shape
    torch.testing.assert_close(now, pinned, rtol=1e-4, atol=1e-4 * float(pinned.abs().max()))


def test_core_never_imports_privacy() -> None:
    """fedcl.distill runs without importing fedcl.privacy (privacy implements the core's interface)."""
    code = ("import sys, torch; from fedcl.distill import create_distiller; from fedcl.data import load_dataset; "
            "d = load_dataset('digits'); "
            "create_distiller('dm', iterations=1, batch_real=8, model_kwargs={'width': 8}, progress=False)"
            ".distill(d.train_images, d.train_labels, 1); "
            "print(sorted(m for m in sys.modules if m.startswith(('fedcl.privacy', 'opacus'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class CountingAccess(RealAccess):
    """The exact access, counting what is read (to show engines read nothing else)."""

    reads = 0

    def batch(self, classes=None):
        type(self).reads += 1
        return super().batch(classes)


class Counting:
    """A privacy policy whose access is the counting exact access (the core only duck-types it)."""

    enabled = True

    def open_access(self, engine, real, classes, ipc, gen):
        return CountingAccess(real, classes, engine.batch_real, gen)


@pytest.mark.parametrize("method, reads", [("dm", 3), ("gm", 3 * 10), ("dsa", 3 * 10)])
def test_engines_read_real_data_only_through_their_access(method: str, reads: int, digits) -> None:
    CountingAccess.reads = 0
    engine = create_distiller(method, iterations=3, batch_real=8, model_kwargs={"width": 8}, progress=False,
                              init="noise")
    syn = engine.distill(digits.train_images, digits.train_labels, 1, privacy=Counting())
    assert CountingAccess.reads == reads  # dm: one batch of all classes per step; gm/dsa: one per class per step
    assert syn.meta["privacy"] is None


def test_private_access_records_the_steps_it_took(digits) -> None:
    engine = create_distiller("dm", iterations=4, batch_real=16, model_kwargs={"width": 8}, progress=False)
    syn = engine.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=2.0, replay=1))
    rec = syn.meta["privacy"]
    assert rec["steps"] == 4 and abs(rec["epsilon"] - 2.0) < 0.05
    assert syn.meta["init"] == "noise"  # DP starts from noise by default, without a warning


def test_private_access_refuses_reads_beyond_its_plan(digits) -> None:
    from fedcl.distill.base import ClassData

    real = ClassData(digits.train_images, digits.train_labels, 10, torch.device("cpu"))
    engine = create_distiller("dm", iterations=1, batch_real=8, progress=False)
    access = PrivacyConfig(epsilon=1.0).open_access(engine, real, list(range(10)), 1, torch.Generator())
    with pytest.raises(PrivacyError, match="inside a step"):
        access.batch()
    access.step()
    access.batch([0, 1])
    with pytest.raises(PrivacyError, match="already read"):
        access.batch([1])
    with pytest.raises(PrivacyError, match="more than the 1 private steps"):
        access.step()


def test_dp_refuses_an_explicit_real_init(digits) -> None:
    engine = create_distiller("dm", iterations=1, init="real", progress=False)
    with pytest.raises(ConfigError, match="init='real'"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            engine.distill(digits.train_images, digits.train_labels, 1, privacy=PrivacyConfig(epsilon=1.0))
