"""SimMIM: masked image modelling on the SwinV2 encoder (paper Sec. 3.4; official `models/simmim.py`).

    tokens = patch_embed(x) with masked tokens replaced by `encoder/mask_token`
    z      = norm(last stage map)                    [B, H/s, W/s, C_last]   s = total stride
    x_rec  = pixel_shuffle(conv1x1(z), s)            [B, H, W, in_chans]
    loss   = sum(|target - x_rec| * m) / (sum(m) + 1e-5) / in_chans

with `m` the token mask upsampled by the patch size (only masked pixels count) and `target` the
input, or with `norm_target_window` > 0 the input normalised by its local mean and variance over
that window (SimMIM V2 configs: 47). The encoder is a `SwinTransformerV2` built with
`use_mask_token=True`, held as the submodule `encoder`, so its parameters live under `encoder/`
with this project's usual names and a classifier can be initialised from them; the decoder is
`decoder/{kernel,bias}`.

The pixel shuffle follows torch's `nn.PixelShuffle` channel order (channel c * r * r + i * r + j
goes to pixel (i, j) of channel c), so the official and Hugging Face decoder weights load as they
are (conv [O, I, 1, 1] -> [1, 1, I, O]).
"""
from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swinv2_jax.models.layers import torch_conv_init
from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2

LOSS_EPS = 1e-5            # official: sum(m) + 1e-5
NORM_TARGET_EPS = 1e-6     # official: (var + 1e-6) ** 0.5


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------

def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """NHWC twin of torch's PixelShuffle: [B, H, W, C*r*r] -> [B, H*r, W*r, C].

    Output pixel (h*r + i, w*r + j) of channel c is input channel c*r*r + i*r + j at (h, w).
    """
    b, h, w, crr = x.shape
    if crr % (r * r):
        raise ValueError(f'pixel_shuffle: {crr} channels are not a multiple of {r}x{r}')
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)          # [B, H, i, W, j, C]
    return x.reshape(b, h * r, w * r, c)


def expand_mask(mask: jax.Array, grid: Tuple[int, int]) -> jax.Array:
    """A [B, h, w] mask repeated to [B, *grid] (each cell to a (grid/h) x (grid/w) block).

    The input pipeline gives the mask at the mask-patch grid (6x6 for 192 / 32); the encoder wants
    it at the token grid (48x48 for patch 4): each mask patch becomes 8x8 tokens.
    """
    h, w = mask.shape[1:3]
    if grid[0] % h or grid[1] % w:
        raise ValueError(f'a {h}x{w} mask does not tile the {grid[0]}x{grid[1]} grid: the mask patch size '
                         f'must be a multiple of the model patch size and divide the image size')
    return jnp.repeat(jnp.repeat(mask, grid[0] // h, axis=1), grid[1] // w, axis=2)


def _box_sum(x: jax.Array, window: int) -> jax.Array:
    """Sum over a window x window neighbourhood (stride 1, zero padding window // 2), NHWC.
    Separable: two 1-D sums instead of one 2-D one (47 + 47 adds per pixel, not 47 * 47)."""
    pad = window // 2
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, 1, 1), (1, 1, 1, 1),
                              ((0, 0), (pad, pad), (0, 0), (0, 0)))
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, window, 1), (1, 1, 1, 1),
                                 ((0, 0), (0, 0), (pad, pad), (0, 0)))


def window_counts(height: int, width: int, window: int) -> np.ndarray:
    """[H, W] number of pixels inside the image in each pixel's window (a shape constant)."""
    pad = window // 2
    def one_axis(n):
        i = np.arange(n)
        return np.minimum(i + pad, n - 1) - np.maximum(i - pad, 0) + 1
    return np.outer(one_axis(height), one_axis(width)).astype(np.float32)


def normalized_target(x: jax.Array, window: int = 47) -> jax.Array:
    """Official `norm_targets`: (x - local mean) / sqrt(local unbiased var + 1e-6), per channel.

    Local = the window x window neighbourhood (avg pool, stride 1, padding window // 2,
    count_include_pad=False); var = (E[x^2] - E[x]^2) * n / (n - 1), clamped at 0. NHWC, float32.
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f'norm_target_window must be an odd size >= 3 (official 47), got {window}')
    x = x.astype(jnp.float32)
    n = jnp.asarray(window_counts(x.shape[1], x.shape[2], window))[None, :, :, None]
    mean = _box_sum(x, window) / n
    mean_sq = _box_sum(x * x, window) / n
    var = jnp.maximum((mean_sq - mean * mean) * (n / (n - 1)), 0.0)
    return (x - mean) / jnp.sqrt(var + NORM_TARGET_EPS)


def masked_l1_loss(target: jax.Array, reconstruction: jax.Array, pixel_mask: jax.Array) -> jax.Array:
    """sum(|target - rec| * m) / (sum(m) + 1e-5) / channels; pixel_mask [B, H, W] (1 = masked)."""
    err = jnp.abs(target.astype(jnp.float32) - reconstruction.astype(jnp.float32))
    m = pixel_mask.astype(jnp.float32)[..., None]
    return jnp.sum(err * m) / (jnp.sum(m) + LOSS_EPS) / target.shape[-1]


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class SimMIM(nn.Module):
    """SwinV2 encoder + 1x1-conv/pixel-shuffle decoder, trained to rebuild masked pixels.

    Attributes:
      encoder: a `SwinTransformerV2` with `use_mask_token=True` and `num_classes=0`.
      norm_target_window: 0 to regress the input pixels; an odd window (official V2: 47) to
        regress them normalised by their local mean/variance (`normalized_target`).
      dtype, param_dtype: of the decoder (the encoder has its own).
    """
    encoder: SwinTransformerV2
    norm_target_window: int = 0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    # the fields the training loop reads from a model, forwarded from the encoder
    @property
    def img_size(self):
        return self.encoder.img_size

    @property
    def in_chans(self) -> int:
        return self.encoder.in_chans

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def depths(self):
        return self.encoder.depths

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def token_grid(self) -> Tuple[int, int]:
        return self.encoder.stage_resolutions[0]

    @property
    def stride(self) -> int:
        """Total downsampling of the last stage: patch size x 2^(stages - 1) (32 for 4 stages)."""
        return self.encoder.patch_size * 2 ** (self.encoder.num_stages - 1)

    def check_config(self):
        if not self.encoder.use_mask_token:
            raise ValueError('SimMIM needs an encoder built with use_mask_token=True '
                             '(create_model(name, use_mask_token=True, num_classes=0))')
        if self.encoder.num_classes:
            raise ValueError(f'SimMIM encodes without a classifier; build the encoder with num_classes=0, '
                             f'not {self.encoder.num_classes}')
        if self.norm_target_window and (self.norm_target_window < 3 or self.norm_target_window % 2 == 0):
            raise ValueError(f'norm_target_window must be 0 (off) or an odd size >= 3 (official 47), '
                             f'got {self.norm_target_window}')

    def setup(self):
        self.check_config()
        c_last = self.encoder.num_features
        out = self.stride ** 2 * self.in_chans
        self.decoder = nn.Conv(out, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                               kernel_init=torch_conv_init(c_last), bias_init=torch_conv_init(c_last),
                               name='decoder')

    def token_mask(self, mask: jax.Array) -> jax.Array:
        """A [B, h, w] mask at the token grid or a coarser grid dividing it -> [B, H/patch, W/patch]."""
        if mask.ndim != 3:
            raise ValueError(f'the SimMIM mask must be [batch, h, w] (1 = masked), got shape {tuple(mask.shape)}')
        return expand_mask(mask, self.token_grid)

    def reconstruct(self, x: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
        """Masked image -> reconstruction [B, H, W, in_chans] (float32)."""
        z = self.encoder.features(x, train, mask=self.token_mask(mask))[-1]
        z = self.encoder.norm(z)
        return pixel_shuffle(self.decoder(z), self.stride).astype(jnp.float32)

    def target(self, x: jax.Array) -> jax.Array:
        if self.norm_target_window:
            return normalized_target(x, self.norm_target_window)
        return x.astype(jnp.float32)

    def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, train: bool = False
                 ) -> Tuple[jax.Array, jax.Array]:
        """(loss, reconstruction). mask: [B, h, w] (1 = masked) at the token grid or a grid dividing
        it; None masks nothing (the loss is then 0: it only counts masked pixels)."""
        if mask is None:
            mask = jnp.zeros((x.shape[0], *self.token_grid), jnp.float32)
        tokens = self.token_mask(mask)
        rec = self.reconstruct(x, tokens, train)
        pixels = expand_mask(tokens, tuple(self.img_size))
        return masked_l1_loss(self.target(x), rec, pixels), rec


def create_simmim(encoder: SwinTransformerV2, norm_target_window: int = 0) -> SimMIM:
    """`SimMIM(encoder)`, checked; `encoder` must have `use_mask_token=True`, `num_classes=0`."""
    model = SimMIM(encoder=encoder.clone(parent=None), norm_target_window=int(norm_target_window),
                   dtype=encoder.dtype, param_dtype=encoder.param_dtype)
    model.check_config()
    return model


__all__ = ['SimMIM', 'create_simmim', 'expand_mask', 'masked_l1_loss',
           'normalized_target', 'pixel_shuffle', 'window_counts']
