"""Mixup / CutMix with label smoothing, in JAX, for the device side of the train step.

timm's `Mixup` in 'batch' mode (the recipe of the paper's appendix A1: mixup 0.8, cutmix 1.0,
switch probability 0.5, label smoothing 0.1):
- with probability `mix_prob` the batch is mixed, else only smoothed;
- when both alphas are on, CutMix is chosen with probability `switch_prob`;
- lambda ~ Beta(alpha, alpha); every example is paired with its mirror in the batch (`x[::-1]`);
- CutMix pastes one box of side sqrt(1 - lambda) times the image's (centre uniform, clipped at the
  border) from the mirrored batch, and lambda becomes 1 - (clipped box area) / (image area);
- targets: both one-hot vectors smoothed first (off = smoothing / num_classes,
  on = 1 - smoothing + off), then mixed: lambda * y + (1 - lambda) * y[::-1].

Pure JAX without host callbacks, so it runs inside a jitted, sharded train step; the random draws
come from `rng` only, so a step keyed by (seed, step) resumes exactly.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _get(config: Any, key: str, default):
    value = config.get(key, default)  # a ConfigDict or a plain dict
    return default if value is None else value


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """One-hot targets with label smoothing (timm): off = s / K, on = 1 - s + s / K."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (on - off) + off


def cutmix_box(rng: jax.Array, height: int, width: int, lam: jax.Array):
    """timm's `rand_bbox`: (top, bottom, left, right), int32, of side int(sqrt(1 - lam) * size)."""
    k_y, k_x = jax.random.split(rng)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    cy = jax.random.randint(k_y, (), 0, height)
    cx = jax.random.randint(k_x, (), 0, width)
    top = jnp.clip(cy - cut_h // 2, 0, height)
    bottom = jnp.clip(cy + (cut_h + 1) // 2, 0, height)
    left = jnp.clip(cx - cut_w // 2, 0, width)
    right = jnp.clip(cx + (cut_w + 1) // 2, 0, width)
    return top, bottom, left, right


def mix(rng: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int,
        aug_config: Any) -> tuple[jax.Array, jax.Array]:
    """Mixup or CutMix of a batch plus label smoothing.

    Args:
      rng: a jax PRNG key (fold it from (seed, step) for exact resumption).
      images: [B, H, W, C] NHWC images, any float dtype (kept).
      labels: [B] integer class ids.
      num_classes: number of classes K.
      aug_config: the `aug` ConfigDict (or a dict): `mixup` (alpha, 0 = off), `cutmix` (alpha,
        0 = off), `mix_prob`, `switch_prob`, `label_smoothing`. Read at trace time.

    Returns:
      (images, targets): the mixed images and float32 [B, K] soft targets, each row summing to 1.
    """
    mixup_alpha = float(_get(aug_config, 'mixup', 0.0))
    cutmix_alpha = float(_get(aug_config, 'cutmix', 0.0))
    mix_prob = float(_get(aug_config, 'mix_prob', 1.0))
    switch_prob = float(_get(aug_config, 'switch_prob', 0.5))
    smoothing = float(_get(aug_config, 'label_smoothing', 0.0))

    targets = smooth_one_hot(labels, num_classes, smoothing)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or mix_prob <= 0:
        return images, targets

    k_apply, k_switch, k_mixup, k_cutmix, k_box = jax.random.split(rng, 5)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    lam_mixup = (jax.random.beta(k_mixup, mixup_alpha, mixup_alpha) if mixup_alpha > 0
                 else jnp.float32(1.0))
    lam_cutmix = (jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0
                  else jnp.float32(1.0))
    apply = jax.random.uniform(k_apply) < mix_prob
    branch = jnp.where(apply, jnp.where(use_cutmix, 2, 1), 0)

    height, width = images.shape[1], images.shape[2]
    mirrored = images[::-1]

    def no_mix():
        return images, jnp.float32(1.0)

    def mixup():
        lam = lam_mixup.astype(jnp.float32)
        mixed = images * lam.astype(images.dtype) + mirrored * (1.0 - lam).astype(images.dtype)
        return mixed, lam

    def cutmix():
        top, bottom, left, right = cutmix_box(k_box, height, width, lam_cutmix)
        rows = jnp.arange(height)[:, None]
        cols = jnp.arange(width)[None, :]
        box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        mixed = jnp.where(box[None, :, :, None], mirrored, images)
        lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
        return mixed, lam

    images, lam = jax.lax.switch(branch, [no_mix, mixup, cutmix])
    targets = targets * lam + targets[::-1] * (1.0 - lam)
    return images, targets
