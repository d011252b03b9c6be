"""Parameterised memories: what a synthetic set stores, and how it decodes to images.

A memory is an ``nn.Module`` whose parameters are what is stored (and sent, and counted);
calling it decodes them into images, differentiably, so every engine optimises any memory:
it matches the decoded images and the gradients flow to the stored tensors.

- ``images``: free pixels, one stored image per decoded image (the default).
- ``idc``: multi-formation (Kim et al., ICML 2022): each stored image holds ``factor**2``
  tiles of ``1/factor`` the size, each upsampled to a full image. Selection engines can fill it
  too (each tile a downsampled selected real image).
- ``haba``: bases and hallucinators (Liu et al., NeurIPS 2022): per class some stored bases,
  plus a few small convolutional hallucinators shared by all classes; every hallucinator is
  applied to every basis.

**Budget.** ``ipc`` is a storage budget: ``ipc`` images' worth of numbers per class
(``ipc * C * H * W``). ``images`` and ``idc`` store exactly ``ipc`` full images per class;
``haba`` stores as many bases per class as the budget leaves after its hallucinators' weights.
Soft labels, when learned, are stored too and counted in :meth:`Memory.stored_numel`.

A memory is rebuilt from its stored tensors and its JSON description (:func:`load_memory`),
never from pickle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.errors import ConfigError, DataError
from fedcl.registry import Registry

__all__ = ["MEMORIES", "HaBaMemory", "IDCMemory", "ImageMemory", "Memory", "create_memory", "list_memories",
           "load_memory", "register_memory"]

MEMORIES: Registry[type[Memory]] = Registry("memory parameterisation (param)")


def register_memory(name: str) -> Callable[[type[Memory]], type[Memory]]:
    """Class decorator registering a :class:`Memory` under ``name``."""

    def deco(cls: type[Memory]) -> type[Memory]:
        cls.name = name
        MEMORIES.register(name)(lambda **kw: cls)  # the registry maps names to classes
        return cls

    return deco


def list_memories() -> list[str]:
    """Names of every registered parameterisation."""
    return MEMORIES.names()


def memory_class(name: str) -> type[Memory]:
    """The class registered as ``name`` (ConfigError listing the valid names otherwise)."""
    return MEMORIES.get(name)()


class Memory(nn.Module):
    """A parameterised synthetic memory of ``len(classes)`` classes.

    Subclasses store their tensors as parameters (and, for soft labels, ``label_logits``),
    implement :meth:`decode_images`, and say how many images they decode per class.

    Args:
        classes: the classes of the memory, in class-major order of the decoded images.
        ipc: the storage budget in images per class.
        image_shape: ``(C, H, W)`` of a decoded image.
    """

    name: ClassVar[str] = ""
    #: whether a selection of real images can fill it, each decoded image one selected real image
    #: (``images``: as it is; ``idc``: downsampled into a tile), so selection engines can store into it
    holds_selections: ClassVar[bool] = False

    def __init__(self, classes: list[int], ipc: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.classes = [int(c) for c in classes]
        self.ipc = int(ipc)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.label_logits: nn.Parameter | None = None

    # --- what subclasses provide ---------------------------------------------------------------
    @property
    def per_class(self) -> int:
        """Decoded images per class."""
        raise NotImplementedError

    def decode_images(self) -> torch.Tensor:
        """The decoded images, ``(len(classes) * per_class, C, H, W)``, class-major, differentiable."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The JSON-able options that rebuild this memory with :func:`load_memory`."""
        return {}

    @property
    def init_per_class(self) -> int:
        """How many distinct real images per class the initialisation can use (``ipc`` unless the
        memory decodes more images than it stores)."""
        return self.ipc

    def init_from_images(self, images: torch.Tensor) -> None:
        """Set the stored tensors from ``ipc`` (up to :attr:`init_per_class`) initial images per class
        (class-major)."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        return self.decode_images()

    @property
    def hard_labels(self) -> torch.Tensor:
        """The class of each decoded image (int64)."""
        return torch.tensor(self.classes, dtype=torch.long).repeat_interleave(self.per_class)

    def labels(self) -> torch.Tensor:
        """Hard labels, or with learned soft labels the distributions ``softmax(label_logits)``."""
        if self.label_logits is None:
            return self.hard_labels.to(self.device)
        return F.softmax(self.label_logits, dim=1)

    def enable_soft_labels(self, logits: torch.Tensor) -> None:
        """Store learnable soft labels, initialised from ``logits`` (decoded images x classes)."""
        if logits.shape[0] != len(self.classes) * self.per_class:
            raise ConfigError(f"soft labels need one row per decoded image ({len(self.classes) * self.per_class}), "
                              f"got {logits.shape[0]}")
        self.label_logits = nn.Parameter(logits.detach().clone().float().to(self.device))

    def image_parameters(self) -> list[nn.Parameter]:
        """The stored tensors that decode to images (the engine's ``lr_img`` applies to them)."""
        return [p for n, p in self.named_parameters() if n != "label_logits"]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def stored(self) -> dict[str, torch.Tensor]:
        """What the memory stores (and a summary sends), by name, detached on the CPU."""
        return {n: p.detach().float().cpu().contiguous() for n, p in self.named_parameters()}

    def stored_numel(self) -> int:
        """How many numbers are stored (soft labels included)."""
        return sum(p.numel() for p in self.parameters())

    def budget_numel(self) -> int:
        """The budget: ``ipc`` images' worth of numbers per class."""
        return len(self.classes) * self.ipc * math.prod(self.image_shape)

    def describe(self) -> dict[str, Any]:
        """The JSON description that :func:`load_memory` rebuilds it from, with its storage figures."""
        return {"param": self.name, "param_kwargs": self.options(), "classes": self.classes, "ipc": self.ipc,
                "image_shape": list(self.image_shape), "soft_labels": self.label_logits is not None,
                "stored_numel": self.stored_numel(), "budget_numel": self.budget_numel(),
                "decoded_per_class": self.per_class}


@register_memory("images")
class ImageMemory(Memory):
    """Free pixels: ``ipc`` stored images per class, decoded as themselves."""

    holds_selections = True

    def __init__(self, classes: list[int], ipc: int, image_shape: tuple[int, ...]) -> None:
        super().__init__(classes, ipc, image_shape)
        self.images = nn.Parameter(torch.zeros(len(classes) * ipc, *self.image_shape))

    @property
    def per_class(self) -> int:
        return self.ipc

    def init_from_images(self, images: torch.Tensor) -> None:
        self.images = nn.Parameter(images.detach().clone().float())

    def decode_images(self) -> torch.Tensor:
        return self.images


@register_memory("idc")
class IDCMemory(Memory):
    """Multi-formation: each stored image is ``factor x factor`` tiles, each decoded to a full image.

    Args:
        factor: tiles per side (2 in the IDC paper); must divide the image height and width.

    A selection engine fills it with ``ipc * factor**2`` selected real images per class, each
    downsampled into one tile: the baseline that tells what distillation adds beyond the format.
    """

    holds_selections = True

    def __init__(self, classes: list[int], ipc: int, image_shape: tuple[int, ...], factor: int = 2) -> None:
        super().__init__(classes, ipc, image_shape)
        factor = int(factor)
        h, w = self.image_shape[1:]
        if factor < 1 or h % factor or w % factor:
            raise ConfigError(f"param_kwargs.factor={factor} must be a positive integer that divides the image size "
                              f"{h}x{w}")
        self.factor = factor
        self.images = nn.Parameter(torch.zeros(len(classes) * ipc, *self.image_shape))

    @property
    def per_class(self) -> int:
        return self.ipc * self.factor ** 2

    def options(self) -> dict[str, Any]:
        return {"factor": self.factor}

    @property
    def init_per_class(self) -> int:
        # IDC's "mix" initialisation: every decoded image starts from its own real image
        return self.ipc * self.factor ** 2

    def init_from_images(self, images: torch.Tensor) -> None:
        # each stored image starts as factor**2 downsampled per-class images, tiled; with fewer than
        # ipc * factor**2 images per class given (a small class), they are cycled
        f, (c, h, w) = self.factor, self.image_shape
        k = len(self.classes)
        m = images.shape[0] // k
        if m < 1 or m * k != images.shape[0]:
            raise ConfigError(f"idc initialisation needs the same number (>= 1) of images for each of {k} classes, "
                              f"got {images.shape[0]} images")
        small = F.interpolate(images.detach().float(), size=(h // f, w // f), mode="bilinear", align_corners=False)
        small = small.reshape(k, m, c, h // f, w // f)
        # tile j of stored image i of a class is the (i * f^2 + j)-th image of that class, cycling the m given
        idx = torch.arange(self.ipc * f * f) % m
        tiles = small[:, idx].reshape(k, self.ipc, f, f, c, h // f, w // f)
        stored = tiles.permute(0, 1, 4, 2, 5, 3, 6).reshape(k * self.ipc, c, h, w)
        self.images = nn.Parameter(stored.contiguous())

    def decode_images(self) -> torch.Tensor:
        f, (c, h, w) = self.factor, self.image_shape
        if f == 1:
            return self.images
        n = self.images.shape[0]
        tiles = self.images.reshape(n, c, f, h // f, f, w // f).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(n * f * f, c, h // f, w // f)
        return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


class _Hallucinator(nn.Module):
    """A small residual convolutional network: ``x + s * conv(relu(conv(x)))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.enc = nn.Conv2d(channels, hidden, 3, padding=1)
        self.dec = nn.Conv2d(hidden, channels, 3, padding=1)
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.dec(torch.tanh(self.enc(x)))


@register_memory("haba")
class HaBaMemory(Memory):
    """Bases and hallucinators: each of ``hallucinators`` small networks applied to each stored basis.

    Args:
        hallucinators: number of hallucinators shared by all classes (5 in the paper).
        hidden: channels inside a hallucinator.

    The bases per class are what the budget leaves after the hallucinators' weights.

    Raises:
        ConfigError: the budget cannot hold one basis per class beside the hallucinators.
    """

    def __init__(self, classes: list[int], ipc: int, image_shape: tuple[int, ...], hallucinators: int = 5,
                 hidden: int = 8) -> None:
        super().__init__(classes, ipc, image_shape)
        self.n_hall, self.hidden = int(hallucinators), int(hidden)
        if self.n_hall < 1 or self.hidden < 1:
            raise ConfigError(f"param_kwargs.hallucinators and hidden must be >= 1, got {hallucinators}, {hidden}")
        c = self.image_shape[0]
        self.hallucinators = nn.ModuleList(_Hallucinator(c, self.hidden) for _ in range(self.n_hall))
        weights = sum(p.numel() for p in self.hallucinators.parameters())
        per_image = math.prod(self.image_shape)
        self.bases_per_class = (self.budget_numel() - weights) // (per_image * len(classes))
        if self.bases_per_class < 1:
            raise ConfigError(f"haba: {self.n_hall} hallucinators take {weights} numbers, more than an ipc={ipc} "
                              f"budget leaves for one basis per class; raise ipc or lower param_kwargs.hallucinators")
        self.bases = nn.Parameter(torch.zeros(len(classes) * self.bases_per_class, *self.image_shape))

    @property
    def per_class(self) -> int:
        return self.bases_per_class * self.n_hall

    def options(self) -> dict[str, Any]:
        return {"hallucinators": self.n_hall, "hidden": self.hidden}

    def init_from_images(self, images: torch.Tensor) -> None:
        k = len(self.classes)
        x = images.detach().float().reshape(k, self.ipc, *self.image_shape)[:, :self.bases_per_class]
        self.bases = nn.Parameter(x.reshape(k * self.bases_per_class, *self.image_shape).contiguous())

    def decode_images(self) -> torch.Tensor:
        k, b = len(self.classes), self.bases_per_class
        out = torch.stack([h(self.bases) for h in self.hallucinators], dim=1)  # (k*b, H, C, h, w)
        return out.reshape(k, b * self.n_hall, *self.image_shape).reshape(k * b * self.n_hall, *self.image_shape)


def create_memory(param: str, classes: list[int], ipc: int, image_shape: tuple[int, ...],
                  images: torch.Tensor | None = None, **kwargs: Any) -> Memory:
    """A memory by name, its stored tensors set from ``ipc`` initial images per class when given.

    Raises:
        ConfigError: unknown ``param``, or options that do not fit (listed in the message).
    """
    cls = memory_class(param)
    try:
        memory = cls(classes, ipc, image_shape, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad param_kwargs for param={param!r}: {exc}") from None
    if images is not None:
        memory.init_from_images(images)
        memory.to(images.device)
    return memory


def load_memory(description: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Memory:
    """Rebuild a memory from :meth:`Memory.describe` and :meth:`Memory.stored` (no pickle).

    Raises:
        DataError: the description or the tensors do not fit each other.
    """
    try:
        memory = create_memory(str(description["param"]), list(description["classes"]), int(description["ipc"]),
                               tuple(description["image_shape"]), **dict(description.get("param_kwargs", {})))
        if description.get("soft_labels"):
            memory.label_logits = nn.Parameter(torch.zeros(len(memory.classes) * memory.per_class,
                                                           int(tensors["label_logits"].shape[1])))
        own = dict(memory.named_parameters())
        if set(own) != set(tensors):
            raise DataError(f"stored tensors {sorted(tensors)} do not match a {memory.name!r} memory ({sorted(own)})")
        for name, value in tensors.items():
            if tuple(own[name].shape) != tuple(value.shape):
                raise DataError(f"stored tensor {name!r} has shape {tuple(value.shape)}, a {memory.name!r} memory "
                                f"of this description needs {tuple(own[name].shape)}")
        memory.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataError(f"not a valid stored memory: {exc}") from None
    return memory
