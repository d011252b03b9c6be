"""One-class memories: how a replay buffer keeps, shrinks and checkpoints each class's share.

An engine distills an experience's classes jointly into one :class:`~fedcl.distill.memory.Memory`
(gradient matching needs every class in one loss; soft labels are learned jointly). A class-
incremental buffer then needs each class on its own, because the share rule shrinks classes
independently. :func:`cut` takes one class out of a memory at a given budget, generically:
every stored tensor of the one-class memory is either shared by all classes (a HaBa
hallucinator: copied) or class-major (images, bases, soft-label logits: the class's first
rows). So a prefix is kept: the first stored images of an ``images``/``idc`` memory (each a
random real image at initialisation, so a prefix is an unbiased subset; for a selection
engine, the first picks of its greedy order), the first bases of a ``haba`` memory, and the
soft labels of what is kept. A ``haba`` class keeps its own copy of the experience's
hallucinators, counted in its own share, so each class fits its budget on its own.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from fedcl.distill.memory import Memory, create_memory, load_memory
from fedcl.errors import ConfigError

__all__ = ["cut", "decode", "memories_from_state", "memories_state", "with_soft_labels"]


def cut(memory: Memory, c: int, share: int) -> Memory:
    """Class ``c`` of ``memory`` as a one-class memory of ``share`` images' worth (``share`` <= its ipc).

    Raises:
        ConfigError: ``c`` is not in the memory, or the share cannot hold this parameterisation
            (e.g. a ``haba`` share too small for its hallucinators).
    """
    if c not in memory.classes:
        raise ConfigError(f"class {c} is not in the memory (classes {memory.classes})")
    if share > memory.ipc:
        raise ConfigError(f"cannot cut class {c} to {share} images' worth: the memory holds {memory.ipc}")
    k, i = len(memory.classes), memory.classes.index(c)
    part = create_memory(memory.name, [c], share, memory.image_shape, **memory.options())
    if memory.label_logits is not None:
        part.label_logits = nn.Parameter(torch.zeros(len(part.hard_labels), memory.label_logits.shape[1]))
    source = dict(memory.named_parameters())
    state = {}
    for name, p in part.named_parameters():
        src = source[name].detach().cpu()
        if src.shape == p.shape:  # shared by all classes (or already one class at this budget)
            state[name] = src.clone()
            continue
        per = src.shape[0] // k
        if src.shape[0] % k or src.shape[1:] != p.shape[1:] or p.shape[0] > per:
            raise ConfigError(f"cannot take class {c} out of a {memory.name!r} memory: its tensor {name!r} "
                              f"{tuple(src.shape)} is neither shared nor class-major")
        state[name] = src[i * per:i * per + p.shape[0]].clone()
    part.load_state_dict(state, strict=True)
    return part.requires_grad_(False)


def with_soft_labels(memory: Memory, probs: torch.Tensor) -> Memory:
    """``memory`` with soft labels ``probs`` (one row per decoded image), stored as their logarithm."""
    memory.label_logits = nn.Parameter(probs.clamp_min(1e-8).log().detach().clone(), requires_grad=False)
    return memory


@torch.no_grad()
def decode(memory: Memory) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The decoded images (CPU, float32) and, with soft labels, their distributions (else None)."""
    images = memory().detach().float().cpu()
    soft = memory.labels().detach().float().cpu() if memory.label_logits is not None else None
    return images, soft


def memories_state(memories: dict[int, Memory]) -> dict[str, torch.Tensor]:
    """Tensors only: ``memory.<class>.<name>`` for every stored tensor, the descriptions as JSON bytes."""
    out = {f"memory.{c}.{n}": t for c, m in memories.items() for n, t in m.stored().items()}
    described = json.dumps({str(c): m.describe() for c, m in memories.items()})
    out["memories"] = torch.tensor(list(described.encode()), dtype=torch.uint8)
    return out


def memories_from_state(state: dict[str, torch.Tensor]) -> dict[int, Memory]:
    """Rebuild what :func:`memories_state` wrote (no pickle: tensors and JSON).

    Raises:
        DataError: a description and its tensors do not fit each other.
    """
    described = json.loads(bytes(state["memories"].to(torch.uint8).tolist()).decode())
    out = {}
    for key, desc in described.items():
        prefix = f"memory.{key}."
        tensors = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        out[int(key)] = load_memory(desc, tensors).requires_grad_(False)
    return out
