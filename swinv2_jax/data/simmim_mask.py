"""SimMIM's random block mask (official `MaskGenerator` of `data/data_simmim_pt.py`).

The image is cut into mask patches (32x32 pixels officially); exactly ceil(count * ratio) of them,
drawn uniformly without replacement, are masked (22 of the 36 of a 192x192 image at ratio 0.6);
each covers (mask patch / model patch)^2 tokens (8x8 for model patch 4).

In the input pipeline the mask is drawn with TensorFlow's stateless ops from a seed keyed like
the augmentation: (config.seed, process layout, epoch, position in the epoch) for training and
(config.seed, example index in the split) for evaluation, so the batch at step s, its mask
included, is a pure function of (seed, s) and a resumed run sees the same masks. The pipeline
yields it at the mask-patch grid, `mim_mask` int32 [b, H / mask_patch, W / mask_patch]
(1 = masked); the SimMIM model expands it to its token grid (`SimMIM.token_mask`), so the
pipeline need not know the model's patch size.

`MaskGenerator.__call__(rng)` is the official numpy API (a token-level mask), for use outside
the pipeline.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

Size = Union[int, Tuple[int, int]]


def _pair(x: Size) -> Tuple[int, int]:
    if isinstance(x, int):
        return x, x
    h, w = x
    return int(h), int(w)


class MaskGenerator:
    """Random block masks: `input_size` image, `mask_patch_size` blocks, `mask_ratio` of them masked.

    model_patch_size is only needed for the token-level mask of `__call__` (the official output).
    """

    def __init__(self, input_size: Size = 192, mask_patch_size: int = 32,
                 model_patch_size: Optional[int] = 4, mask_ratio: float = 0.6):
        self.input_size = _pair(input_size)
        self.mask_patch_size = int(mask_patch_size)
        self.model_patch_size = None if model_patch_size is None else int(model_patch_size)
        self.mask_ratio = float(mask_ratio)
        h, w = self.input_size
        p = self.mask_patch_size
        if p < 1 or h % p or w % p:
            raise ValueError(f'simmim.mask_patch_size {p} does not divide the {h}x{w} image; choose a '
                             f'divisor of both sides (official: 32 for 192x192)')
        if self.model_patch_size is not None and (self.model_patch_size < 1 or p % self.model_patch_size):
            raise ValueError(f'simmim.mask_patch_size {p} is not a multiple of the model patch size '
                             f'{self.model_patch_size}: a mask patch must cover whole tokens')
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f'simmim.mask_ratio must be in (0, 1), got {self.mask_ratio}')
        self.grid = (h // p, w // p)
        self.count = self.grid[0] * self.grid[1]
        self.mask_count = int(math.ceil(self.count * self.mask_ratio))

    @property
    def scale(self) -> int:
        """Tokens per mask patch along each side."""
        if self.model_patch_size is None:
            raise ValueError('MaskGenerator built without model_patch_size: no token-level mask')
        return self.mask_patch_size // self.model_patch_size

    def block_mask(self, rng: np.random.Generator) -> np.ndarray:
        """int32 [H / mask_patch, W / mask_patch], exactly `mask_count` ones."""
        mask = np.zeros(self.count, np.int32)
        mask[rng.permutation(self.count)[:self.mask_count]] = 1
        return mask.reshape(self.grid)

    def __call__(self, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The official output: int32 [H / model_patch, W / model_patch] token mask."""
        rng = np.random.default_rng() if rng is None else rng
        s = self.scale
        return self.block_mask(rng).repeat(s, axis=0).repeat(s, axis=1)

    def tf_block_mask(self, seed: tf.Tensor) -> tf.Tensor:
        """`block_mask` from a stateless [2] seed, in TensorFlow (a pure function of the seed)."""
        u = tf.random.stateless_uniform([self.count], seed)
        chosen = tf.math.top_k(u, k=self.mask_count, sorted=False).indices
        mask = tf.scatter_nd(chosen[:, None], tf.ones([self.mask_count], tf.int32), [self.count])
        return tf.reshape(mask, self.grid)


def from_config(config, image_size: Size) -> Optional[MaskGenerator]:
    """The generator of a `objective='simmim'` config (`config.simmim.mask_patch_size`,
    `mask_ratio`), None for other objectives."""
    if config.get('objective', 'classification') != 'simmim':
        return None
    mim = config.get('simmim', None) or {}
    return MaskGenerator(image_size, int(mim.get('mask_patch_size', 32)), None,
                         float(mim.get('mask_ratio', 0.6)))


__all__ = ['MaskGenerator', 'from_config']
