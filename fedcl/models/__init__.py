"""Networks behind one registry; each has ``embed(x)`` and ``classifier``."""

from fedcl.models import convnet as _convnet  # noqa: F401  (registers convnet, mlp, lenet)
from fedcl.models import resnet as _resnet  # noqa: F401  (registers resnet18)
from fedcl.models.convnet import ConvNet
from fedcl.models.registry import MODELS, create_model, list_models, register_model
from fedcl.models.saved import load_model, save_model

__all__ = ["MODELS", "ConvNet", "create_model", "list_models", "load_model", "register_model", "save_model"]
