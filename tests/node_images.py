"""Tiny PNG image folders for the tests of nodes that read their own data (``data-path``).

Class ``k`` of ``classes`` is a bright horizontal band at a row that depends on ``k``, on noise:
a small network separates the classes after a few epochs, and every folder made with another
``seed`` holds other images of the same classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle")


def make_folder(root: Path, classes: tuple[str, ...] | list[str] = CLASSES, *, per_class: int = 12, seed: int = 0,
                size: int = 8, test: int = 0, label_space: tuple[str, ...] | list[str] = CLASSES) -> Path:
    """Write ``root/train/<class>/*.png`` (and ``root/test/...`` with ``test`` images per class); return ``root``.

    The band of class ``c`` sits at a row fixed by its index in ``label_space``, so folders holding
    different subsets of classes still agree on what each class looks like.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    splits = {"train": per_class, **({"test": test} if test else {})}
    for split, n in splits.items():
        for c in classes:
            k = list(label_space).index(c) if c in label_space else len(label_space)
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size))
                row = (k * size) // (len(label_space) + 1) + 1
                img[row:row + max(1, size // 4)] = 255
                Image.fromarray(img.astype(np.uint8), "L").save(folder / f"{seed}-{i}.png")
    return root
