"""`digits_scenes`: the embedded segmentation default, scenes built from scikit-learn's digits.

Each scene is a 64x64 black canvas with three of `digits.py`'s 32x32 images in three distinct
cells of a 2x2 grid of 32-pixel cells, each shifted by up to 4 pixels without leaving the canvas
(a later digit's strokes paint over an earlier one's).
Classes: 0 background, 1 + d for digit d (11 classes); a pixel is a digit's when its grey level
is at least 64 of 255 (the stroke), the rest of the digit's square is background.

Splits, fixed: 'train' scenes use only the digits of `digits`' train split, 'test' scenes only
its 300 held-out digits, so no digit image is shared. Scene i of a split draws its digits and
positions from `numpy.random.RandomState` (a generator whose stream numpy keeps frozen) seeded
by (split, i): the same bytes on every machine.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np

from swinv2_jax.data import digits as digits_lib

CANVAS = 64
CELL = 32
DIGITS_PER_SCENE = 3
JITTER = 4
INK = 64
NUM_CLASSES = 11
SPLITS = {'train': (2000, 0), 'test': (300, 1)}   # split -> (scenes, seed offset)


@functools.lru_cache(maxsize=None)
def _pool() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey 32x32 uint8 digits, labels, is-test mask) of all 1,797 digits."""
    images, labels = digits_lib.load_arrays()
    test = np.zeros(len(labels), bool)
    test[digits_lib.test_indices(labels)] = True
    return images[..., 0], labels, test


@functools.lru_cache(maxsize=None)
def scenes(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 64, 64, 3], masks uint8 [N, 64, 64]) of `split` ('train' or 'test')."""
    if split not in SPLITS:
        raise ValueError(f'digits_scenes has splits {", ".join(SPLITS)}, not {split!r}')
    count, offset = SPLITS[split]
    small, labels, test = _pool()
    members = np.flatnonzero(test if split == 'test' else ~test)
    grid = CANVAS // CELL
    images = np.zeros((count, CANVAS, CANVAS), np.uint8)
    masks = np.zeros((count, CANVAS, CANVAS), np.uint8)
    for i in range(count):
        rng = np.random.RandomState([offset, i])
        picks = members[rng.randint(0, len(members), DIGITS_PER_SCENE)]
        cells = rng.choice(grid * grid, DIGITS_PER_SCENE, replace=False)
        for index, cell in zip(picks, cells):
            y = int(np.clip((cell // grid) * CELL + rng.randint(-JITTER, JITTER + 1), 0, CANVAS - CELL))
            x = int(np.clip((cell % grid) * CELL + rng.randint(-JITTER, JITTER + 1), 0, CANVAS - CELL))
            digit = small[index]
            ink = digit >= INK
            patch = images[i, y:y + CELL, x:x + CELL]
            patch[ink] = digit[ink]
            masks[i, y:y + CELL, x:x + CELL][ink] = 1 + labels[index]
    return np.repeat(images[..., None], 3, axis=-1), masks


__all__ = ['CANVAS', 'NUM_CLASSES', 'scenes']
