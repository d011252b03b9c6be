"""Distillation engines behind one registry; each returns a :class:`SyntheticSet`."""

from fedcl.distill import dm as _dm  # noqa: F401  (registers dm)
from fedcl.distill import frepo as _frepo  # noqa: F401  (registers frepo)
from fedcl.distill import gm as _gm  # noqa: F401  (registers gm, dsa)
from fedcl.distill import kernel as _kernel  # noqa: F401  (registers kip)
from fedcl.distill import mtt as _mtt  # noqa: F401  (registers mtt)
from fedcl.distill import select as _select  # noqa: F401  (registers random, herding, kcenter)
from fedcl.distill.access import PrivacyPolicy, RealAccess, RealBatch
from fedcl.distill.augment import DSA
from fedcl.distill.base import DISTILLERS, ClassData, Distiller, create_distiller, list_distillers, register_distiller
from fedcl.distill.synthetic import SyntheticSet

__all__ = ["DISTILLERS", "DSA", "ClassData", "Distiller", "PrivacyPolicy", "RealAccess", "RealBatch", "SyntheticSet",
           "create_distiller", "list_distillers", "register_distiller"]
