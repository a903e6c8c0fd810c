"""Swin Transformer V2 in Flax Linen.

"Swin Transformer V2: Scaling Up Capacity and Resolution", Liu et al. (CVPR 2022).

Reads top to bottom like timm's `swin_transformer_v2.py`: the ablation switches, window helpers and
the constant tables (computed with numpy once per shape, never per image), attention, block, patch
merging, stage, model. The building blocks (LayerNorm, GELU and drop-path with their hand-written
gradients, the MLP, the patch embedding, the attention arithmetic) are in `layers.py`, as timm keeps
them in `timm/layers/`; the configuration and input checks are in `checks.py`.
Numerics follow the official PyTorch code (microsoft/Swin-Transformer); see `shared/REFERENCE.md`:

* scaled cosine attention, `logit_scale` clamped at log(100), q/v biases and no k bias;
* log-spaced continuous position bias (CPB) from a 2-512-heads meta network, `16 * sigmoid`;
* res-post-norm: `x + drop_path(norm(branch(x)))`, the norms zero-initialised;
* shifted windows with the -100 mask; a window that does not fit the feature map is clipped to it
  and its shift disabled (`resolution <= window`, per dimension as in timm and Hugging Face);
* V2 patch merging (reduction then norm), placed at the start of stages 1-3 as in timm;
* SwinV2-H/G: one more LayerNorm on the main branch every `extra_norm_every` blocks.

The paper's ablations are switches, not forks (`Switches`; defaults = V2, all V1 values = Swin
Transformer V1): `norm_placement` 'res_post' | 'pre', `attention` 'cosine' | 'dot', `position_bias`
'log_cpb' | 'linear_cpb' | 'table', `qkv_bias` 'qv' | 'qkv', `patch_merging` 'v2' | 'v1'. With
`strict_img_size=False` the model takes images of any size (multiples of the patch size): feature
maps are padded to the window grid and to even sizes before merging, as timm's dynamic mode does.

Images are NHWC. Parameters are stored in `param_dtype`, computation runs in `dtype`; the cosine
normalisation, the position bias, the logit scale and the softmax always run in float32 (bf16/fp16
softmax of the large cosine logits is where the PyTorch versions produce NaNs).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swinv2_jax.models import checks
from swinv2_jax.models.layers import (DropPath, HeadProjection, Mlp, PatchEmbed, QKVProjection, attention_core,
                                      dense, layer_norm, remat_policy, sequential_attention, sequential_mlp,
                                      trunc_normal_init)

Dtype = Any
Pair = Tuple[int, int]

MASK_VALUE = -100.0    # official value added between tokens of different shifted regions
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # logit scale clamped at 100
CPB_HIDDEN = 512

# The ablation switches and their valid values; the first value is SwinV2's, the last Swin V1's.
SWITCHES = dict(
    norm_placement=('res_post', 'pre'),             # LayerNorm on the branch output (V2) or input (V1)
    attention=('cosine', 'dot'),                    # scaled cosine (V2) or q * d**-0.5 @ k^T (V1)
    position_bias=('log_cpb', 'linear_cpb', 'table'),  # CPB on log/linear coordinates, or V1's table
    qkv_bias=('qv', 'qkv'),                         # q and v biases, no k bias (V2), or all three (V1)
    patch_merging=('v2', 'v1'),                     # reduction then norm (V2), or norm then reduction
)
SWIN_V1 = {k: v[-1] for k, v in SWITCHES.items()}

# Where a feature map the windows do not tile is padded, and whether a window larger than the map
# is clipped to it (its shift then off): mode -> (pad before the cyclic shift, clip). All three agree
# when the windows tile every stage and no window exceeds its map.
WINDOW_PADDING = {
    'timm': (False, True),     # timm's dynamic mode, the official code: shift, then pad
    'hf': (True, True),        # Hugging Face's Swin / Swinv2 models and Swinv2Backbone: pad, then shift
    'mmseg': (True, False),    # mmsegmentation's Swin, Hugging Face's SwinBackbone: pad, shift, never clip
}


@dataclasses.dataclass(frozen=True)
class Switches:
    """The ablation switches (`SWITCHES`), handed as one value from the model to every stage, block
    and attention, so that no module restates them. Defaults are SwinV2's; `Switches(**SWIN_V1)` is
    Swin Transformer V1. The model validates them (`checks.option_errors`)."""
    norm_placement: str = SWITCHES['norm_placement'][0]
    attention: str = SWITCHES['attention'][0]
    position_bias: str = SWITCHES['position_bias'][0]
    qkv_bias: str = SWITCHES['qkv_bias'][0]
    patch_merging: str = SWITCHES['patch_merging'][0]


def to_pair(x) -> Pair:
    """An int or a pair of ints -> (int, int): sizes and windows may be given either way."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f'expected an int or a pair of ints, got {x!r}')
        return int(x[0]), int(x[1])
    return int(x), int(x)


# ----------------------------------------------------------------------------------------------
# Window helpers and the constant tables (numpy: computed once per shape at trace time)
# ----------------------------------------------------------------------------------------------

def window_partition(x: jax.Array, window: Pair) -> jax.Array:
    """[B, H, W, C] -> [B, nW, Wh*Ww, C], windows in row-major order, tokens row-major inside."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, h // wh, wh, w // ww, ww, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def window_reverse(windows: jax.Array, window: Pair, resolution: Pair) -> jax.Array:
    """Inverse of `window_partition`: [B, nW, Wh*Ww, C] -> [B, H, W, C]."""
    b, _, _, c = windows.shape
    h, w = resolution
    wh, ww = window
    x = windows.reshape(b, h // wh, w // ww, wh, ww, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


@functools.lru_cache(maxsize=None)
def relative_coords_table(window: Pair, pretrained_window: Pair = (0, 0), log_spaced: bool = True) -> np.ndarray:
    """Log-spaced relative coordinates [2Wh-1, 2Ww-1, 2] (float32), the CPB meta network's input.

    Offsets are normalised by the pretrained window size minus one when one is given (> 0), else
    by the (clipped) window size minus one, scaled to [-8, 8] and mapped by
    sign(x) * log2(|x| + 1) / log2(8). A window of 1 only has offset 0: the divisor is guarded.
    `log_spaced=False` stops after the normalisation: the paper's linear-spaced CPB ablation, whose
    coordinates lie in [-1, 1] at the pre-training window and grow linearly past it.
    """
    wh, ww = window
    dh = np.arange(-(wh - 1), wh, dtype=np.float32)
    dw = np.arange(-(ww - 1), ww, dtype=np.float32)
    table = np.stack(np.meshgrid(dh, dw, indexing='ij'), axis=-1)
    if pretrained_window[0] > 0:
        div = (max(pretrained_window[0] - 1, 1), max(pretrained_window[1] - 1, 1))
    else:
        div = (max(wh - 1, 1), max(ww - 1, 1))
    table = table / np.asarray(div, np.float32)
    if not log_spaced:
        return table.astype(np.float32)
    table = table * np.float32(8.0)
    table = np.sign(table) * np.log2(np.abs(table) + np.float32(1.0)) / np.float32(np.log2(8.0))
    return table.astype(np.float32)


@functools.lru_cache(maxsize=None)
def relative_position_index(window: Pair) -> np.ndarray:
    """[N, N] index into the flattened [2Wh-1, 2Ww-1] table for tokens i, j of a window."""
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing='ij')).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]
    return ((rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def shifted_window_mask(resolution: Pair, window: Pair, shift: Pair) -> Optional[np.ndarray]:
    """[nW, N, N] additive mask (0 or -100) of a shifted-window block, None when unshifted."""
    if not any(shift):
        return None
    h, w = resolution
    img = np.zeros((1, h, w, 1), np.float32)
    region = 0
    for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            img[:, hs, ws, :] = region
            region += 1
    ids = np.asarray(window_partition(img, window))[0, :, :, 0]  # [nW, N]
    diff = ids[:, None, :] - ids[:, :, None]
    return np.where(diff != 0, MASK_VALUE, 0.0).astype(np.float32)


def pad_to_multiple(x: jax.Array, multiple: Pair) -> jax.Array:
    """Zero-pad [B, H, W, C] at the bottom and right up to multiples of (mh, mw) (timm's padding)."""
    ph, pw = (-x.shape[1]) % multiple[0], (-x.shape[2]) % multiple[1]
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return x


def window_and_shift(resolution: Pair, window: Pair, shift: Pair, clip: bool = True) -> Tuple[Pair, Pair]:
    """The window is clipped to a feature map no larger than it, and its shift disabled (`<=`);
    `clip=False` keeps both (the map is padded to the window instead: `WINDOW_PADDING['mmseg']`)."""
    if not clip:
        return tuple(window), tuple(shift)
    new_window = tuple(r if r <= w else w for r, w in zip(resolution, window))
    new_shift = tuple(0 if r <= w else s for r, w, s in zip(resolution, new_window, shift))
    return new_window, new_shift


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------


class WindowAttention(nn.Module):
    """Window attention: scaled cosine (V2) or dot product (V1), with a continuous position bias
    (V2) or a learned table (V1).

    Attributes:
      dim: channels C.
      num_heads: attention heads; head dim is C // num_heads.
      window: (Wh, Ww) window actually used (already clipped to the feature map).
      pretrained_window: the window size the CPB coordinates are normalised by; (0, 0) for none.
      attn_drop, proj_drop: dropout rates on the attention probabilities and on the output.
      chunk_size: 0 computes all windows at once; > 0 computes `chunk_size` windows at a time with
        `jax.lax.map` (sequential attention; see `sequential_attention`).
      switches: of the ablation switches, the attention reads three:
        attention: 'cosine' (normalised q, k times exp(clamped `logit_scale`)) or 'dot'
          (q * head_dim**-0.5; no `logit_scale` parameter);
        position_bias: 'log_cpb' / 'linear_cpb' (the `cpb_mlp` meta network of log- or linear-spaced
          coordinates, then 16 * sigmoid) or 'table' (V1's learned `relative_position_bias_table`
          [(2Wh-1)(2Ww-1), heads], normal(0.02) init, used as is);
        qkv_bias: 'qv' (`q_bias`, `v_bias`, no key bias) or 'qkv' (the qkv Linear's own bias).
    """
    dim: int
    num_heads: int
    window: Pair
    pretrained_window: Pair = (0, 0)
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    chunk_size: int = 0
    switches: Switches = Switches()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def position_bias_table(self) -> jax.Array:
        """[(2Wh-1)*(2Ww-1), heads] float32 bias per relative offset, before any squashing."""
        wh, ww = self.window
        if self.switches.position_bias == 'table':
            table = self.param('relative_position_bias_table', trunc_normal_init(0.02),
                               ((2 * wh - 1) * (2 * ww - 1), self.num_heads), self.param_dtype)
            return table.astype(jnp.float32)
        coords = jnp.asarray(relative_coords_table(self.window, self.pretrained_window,
                                                   log_spaced=self.switches.position_bias == 'log_cpb'))
        h = dense(CPB_HIDDEN, name='cpb_mlp_0', dtype=jnp.float32, param_dtype=self.param_dtype)(coords)
        h = nn.relu(h)
        table = dense(self.num_heads, name='cpb_mlp_2', dtype=jnp.float32, param_dtype=self.param_dtype,
                      use_bias=False)(h)
        return table.reshape(-1, self.num_heads)

    def position_bias_matrix(self) -> jax.Array:
        """[heads, N, N] float32 bias; depends on the window and the weights only, not the images.

        The CPB's 16 * sigmoid is applied to the [(2Wh-1)(2Ww-1), heads] table before the gather
        (an elementwise function commutes with it: the same numbers), so the backward pass keeps
        the sigmoid of the small table, not of the [heads, N, N] matrix (20 MiB a block at
        window 24 with 16 heads).
        """
        table = self.position_bias_table()
        if self.switches.position_bias != 'table':
            table = 16.0 * jax.nn.sigmoid(table)
        index = relative_position_index(self.window)
        bias = jnp.take(table, index.reshape(-1), axis=0).reshape(index.shape + (self.num_heads,))
        return bias.transpose(2, 0, 1)

    def logit_scale(self) -> jax.Array:
        """[heads, 1, 1] float32 factor on the queries; broadcasts over their (heads, N, d) axes."""
        heads = self.num_heads
        if self.switches.attention == 'dot':
            return jnp.full((heads, 1, 1), (self.dim // heads) ** -0.5, jnp.float32)
        logit_scale = self.param('logit_scale', lambda k, s, d: jnp.full(s, math.log(10.0), d),
                                 (heads, 1, 1), self.param_dtype)
        return jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), LOGIT_SCALE_MAX))

    @nn.compact
    def __call__(self, x: jax.Array, mask: Optional[np.ndarray], deterministic: bool) -> jax.Array:
        """x: [B, nW, N, C]; mask: [nW, N, N] or None. Returns [B, nW, N, C]."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        fused_bias = self.switches.qkv_bias == 'qkv'
        qkv = QKVProjection(dim=c, num_heads=heads, fused_bias=fused_bias, dtype=self.dtype,
                            param_dtype=self.param_dtype, name='qkv')
        q_bias = v_bias = None
        if not fused_bias:
            q_bias = self.param('q_bias', nn.initializers.zeros, (c,), self.param_dtype)
            v_bias = self.param('v_bias', nn.initializers.zeros, (c,), self.param_dtype)
        proj = HeadProjection(dim=c, num_heads=heads, dtype=self.dtype, param_dtype=self.param_dtype, name='proj')

        scale = self.logit_scale()
        bias = self.position_bias_matrix()
        cosine = self.switches.attention == 'cosine'
        mask = None if mask is None else jnp.asarray(mask)
        drop = 0.0 if deterministic else self.attn_drop
        rng = self.make_rng('dropout') if drop > 0.0 else None
        if self.chunk_size:
            out = sequential_attention(x, qkv_weights=qkv.weights(q_bias, v_bias), proj_weights=proj.weights(),
                                       scale=scale, bias=bias, mask=mask, rng=rng, drop=drop,
                                       chunk=self.chunk_size, cosine=cosine)
        else:
            q, k, v = qkv(x, q_bias, v_bias)                                 # [B, nW, heads, N, d]
            out = proj(attention_core(q, k, v, scale=scale, bias=bias, mask=mask, rng=rng, drop=drop,
                                      cosine=cosine))
        return nn.Dropout(self.proj_drop)(out, deterministic=deterministic)


# ----------------------------------------------------------------------------------------------
# Block, patch merging, stage
# ----------------------------------------------------------------------------------------------


def shifted_window_attention(attn: nn.Module, x: jax.Array, window: Pair, shift: Pair,
                             deterministic: bool, pad_first: bool = False) -> jax.Array:
    """Roll by -shift, zero-pad to the window grid, attend within windows, crop, roll back.

    The order (roll, then pad at the bottom/right) and the shifted-window mask built for the
    padded map are timm's: with a feature map the window divides, nothing is padded and this is
    the official computation. The padded tokens are zeros (not masked, as in timm's dynamic mode).
    `pad_first` pads before rolling, as Hugging Face and mmsegmentation do (the same mask).
    """
    h, w = x.shape[1:3]
    shifted = any(shift)
    if pad_first:
        x = pad_to_multiple(x, window)
    if shifted:
        x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
    x = pad_to_multiple(x, window)
    padded = tuple(x.shape[1:3])
    windows = attn(window_partition(x, window), shifted_window_mask(padded, window, shift), deterministic)
    x = window_reverse(windows, window, padded)
    if not pad_first:
        x = x[:, :h, :w]  # the roll was over the unpadded map: undo it there
    if shifted:
        x = jnp.roll(x, shift, axis=(1, 2))
    return x[:, :h, :w]


class SwinTransformerV2Block(nn.Module):
    """(Shifted) window attention and MLP, each a residual branch.

    `switches.norm_placement` 'res_post' (V2): x + drop_path(norm(f(x))), the norms zero-initialised
    so each block starts as the identity; 'pre' (V1): x + drop_path(f(norm(x))), the norms at ones.

    Attributes:
      resolution: the (H, W) feature map the block is built for (the window was clipped to it).
      window, shift: the window and shift actually used (see `window_and_shift`).
      pretrained_window: see `WindowAttention`.
      mlp_ratio, drop, attn_drop, drop_path: MLP hidden size / C, dropout rates, stochastic depth.
      attention_chunk: windows per `lax.map` step of sequential attention (0 = all at once).
      mlp_chunk: tokens (at most) per `nn.scan` step of the sequential MLP (0 = all at once).
      switches: the ablation switches (`Switches`).
    """
    dim: int
    num_heads: int
    resolution: Pair
    window: Pair
    shift: Pair
    pretrained_window: Pair = (0, 0)
    mlp_ratio: float = 4.0
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    attention_chunk: int = 0
    mlp_chunk: int = 0
    pad_first: bool = False
    switches: Switches = Switches()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        post = self.switches.norm_placement == 'res_post'
        attn = WindowAttention(
            dim=self.dim, num_heads=self.num_heads, window=self.window, pretrained_window=self.pretrained_window,
            attn_drop=self.attn_drop, proj_drop=self.drop, chunk_size=self.attention_chunk,
            switches=self.switches, dtype=self.dtype, param_dtype=self.param_dtype, name='attn')
        norm1 = layer_norm('norm1', dtype=self.dtype, param_dtype=self.param_dtype, zero_init=post)
        norm2 = layer_norm('norm2', dtype=self.dtype, param_dtype=self.param_dtype, zero_init=post)
        mlp = Mlp(hidden=int(self.dim * self.mlp_ratio), drop=self.drop, dtype=self.dtype,
                  param_dtype=self.param_dtype, name='mlp')
        drop_path = DropPath(rate=self.drop_path)

        def attend(y):
            return shifted_window_attention(attn, y, self.window, self.shift, deterministic, self.pad_first)

        def feed_forward(y):
            if self.mlp_chunk:
                return sequential_mlp(mlp, y, self.mlp_chunk, deterministic)
            return mlp(y, deterministic)

        if post:
            x = x + drop_path(norm1(attend(x)), deterministic)
            return x + drop_path(norm2(feed_forward(x)), deterministic)
        x = x + drop_path(attend(norm1(x)), deterministic)
        return x + drop_path(feed_forward(norm2(x)), deterministic)


class PatchMerging(nn.Module):
    """Patch merging: 2x2 neighbours concatenated [4C] -> Linear(4C -> 2C, no bias) -> LayerNorm(2C)
    (V2), or LayerNorm(4C) -> Linear (V1, `norm_first`). An odd side is zero-padded first (timm;
    only reachable with strict_img_size=False)."""
    out_dim: int
    norm_first: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = pad_to_multiple(x, (2, 2))
        b, h, w, c = x.shape
        # channel order x0=(0::2, 0::2), x1=(1::2, 0::2), x2=(0::2, 1::2), x3=(1::2, 1::2)
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        norm = layer_norm('norm', dtype=self.dtype, param_dtype=self.param_dtype)
        if self.norm_first:
            x = norm(x)
        x = dense(self.out_dim, name='reduction', dtype=self.dtype, param_dtype=self.param_dtype,
                  use_bias=False)(x)
        return x if self.norm_first else norm(x)


class SwinTransformerV2Stage(nn.Module):
    """Optional patch merging, then `depth` blocks alternating unshifted and shifted windows.

    `extra_norm_every` > 0 adds a LayerNorm on the main branch after every that many blocks of the
    stage (SwinV2-H/G; see `SwinTransformerV2`). `remat_policy` wraps each block in `nn.remat`.
    `switches` (`SwinTransformerV2.switches`) go to the merging and to every block as they are.
    """
    dim: int
    depth: int
    num_heads: int
    resolution: Pair            # after the downsampling
    window: Pair                # requested window; each block clips it to the feature map
    pretrained_window: Pair = (0, 0)
    downsample: bool = False
    mlp_ratio: float = 4.0
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: Sequence[float] = ()
    extra_norm_every: int = 0
    attention_chunk: int = 0
    mlp_chunk: int = 0
    remat_policy: str = 'none'
    window_padding: str = 'timm'
    switches: Switches = Switches()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        if self.downsample:
            x = PatchMerging(out_dim=self.dim, norm_first=self.switches.patch_merging == 'v1',
                             dtype=self.dtype, param_dtype=self.param_dtype, name='downsample')(x)
        block = SwinTransformerV2Block
        if self.remat_policy != 'none':
            # argnum 0 is the module itself: `deterministic` (2) is a Python bool
            block = nn.remat(block, policy=remat_policy(self.remat_policy), static_argnums=(2,))
        for i in range(self.depth):
            target_shift = (0, 0) if i % 2 == 0 else (self.window[0] // 2, self.window[1] // 2)
            pad_first, clip = WINDOW_PADDING[self.window_padding]
            window, shift = window_and_shift(self.resolution, self.window, target_shift, clip)
            x = block(
                dim=self.dim, num_heads=self.num_heads, resolution=self.resolution, window=window, shift=shift,
                pretrained_window=self.pretrained_window, mlp_ratio=self.mlp_ratio, drop=self.drop,
                attn_drop=self.attn_drop, drop_path=self.drop_path[i], attention_chunk=self.attention_chunk,
                mlp_chunk=self.mlp_chunk, pad_first=pad_first, switches=self.switches, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f'blocks_{i}',
            )(x, deterministic)
            if self.extra_norm_every and (i + 1) % self.extra_norm_every == 0:
                x = layer_norm(f'extra_norm_{i}', dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

class SwinTransformerV2(nn.Module):
    """Swin Transformer V2 classifier / backbone on NHWC images.

    Attributes:
      img_size: (H, W) of the input images; the windows, masks and bias tables are built for it.
      patch_size: patch embedding stride and kernel (4 in every released model).
      in_chans: input channels.
      num_classes: classifier outputs; 0 returns the pooled features (no head).
      embed_dim: C, channels of stage 0 (stage i has C * 2**i).
      depths, num_heads: blocks and attention heads per stage.
      window_size: per-stage requested window (each block clips it to its feature map).
      pretrained_window_sizes: per-stage window the CPB coordinates are normalised by (0 = none);
        set it to the pre-training windows when fine-tuning at another window size.
      mlp_ratio: MLP hidden size / C.
      drop_rate: dropout after the patch embedding, in the MLPs and after the attention projection.
      attn_drop_rate: dropout on attention probabilities.
      drop_path_rate: stochastic depth, growing linearly from 0 to this over all blocks.
      extra_norm_every: SwinV2-H/G's extra main-branch LayerNorm period in blocks (0 = off).
      remat_policy: activation checkpointing of each block: 'none', 'full' (save only the block
        input), 'dots' (save matmul outputs), 'dots_no_batch' (save matmuls without batch dims).
      use_mask_token: add SimMIM's learned `mask_token` [C]; `features(x, mask=m)` then replaces
        the patch tokens where the [B, H/patch, W/patch] mask is 1 (after the patch norm).
      sequential_attention: stage indices whose window attention runs `attention_chunk_size`
        windows at a time (`jax.lax.map` with a rematerialised body); the paper uses (0, 1).
      sequential_mlp: stage indices whose MLP runs `mlp_chunk_tokens` tokens at a time (`nn.scan`
        with a rematerialised body): the 4C-wide hidden activations, a block's largest once the
        attention is sequential, never exist at once. Not in the paper; with
        sequential_attention on the same stages, nothing of a block is the size of its hidden.
      norm_placement: 'res_post' (V2: LayerNorm on each residual branch's output, zero-initialised)
        or 'pre' (V1: on its input, initialised to ones).
      attention: 'cosine' (V2: scaled cosine attention with a learned, clamped `logit_scale`) or
        'dot' (V1: q * head_dim**-0.5 @ k^T).
      position_bias: 'log_cpb' (V2: the CPB meta network on log-spaced coordinates), 'linear_cpb'
        (the same network on linear coordinates in [-1, 1]) or 'table' (V1: a learned
        `relative_position_bias_table` per block; resized bicubically when loaded into another window).
      qkv_bias: 'qv' (V2: q_bias and v_bias, no key bias) or 'qkv' (V1: the qkv Linear's bias).
      patch_merging: 'v2' (reduction then LayerNorm(2C)) or 'v1' (LayerNorm(4C) then reduction).
      strict_img_size: True: inputs must be img_size. False: any size whose sides are multiples of
        patch_size, at apply time with the same parameters; each block zero-pads its feature map to
        its window grid (and odd maps are padded before merging), as timm's dynamic mode
        (`strict_img_size=False`) does. Windows and shifts stay those chosen for img_size.
      window_padding: 'timm' (the above), 'hf' (pad before the cyclic shift, as Hugging Face) or
        'mmseg' (pad before the shift and never clip a window to a smaller map, as mmsegmentation
        and Hugging Face's SwinBackbone): `WINDOW_PADDING`. No parameters; the same numbers
        wherever the windows tile every stage and none exceeds its map.
      dtype: computation dtype (e.g. jnp.bfloat16); param_dtype: parameter storage dtype.
      None of remat_policy, sequential_attention, attention_chunk_size, sequential_mlp or
      mlp_chunk_tokens changes the numbers (with dropout, the sequential forms draw a mask per chunk).
    """
    img_size: Pair = (224, 224)
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: Tuple[Pair, ...] = ((7, 7),) * 4
    pretrained_window_sizes: Tuple[Pair, ...] = ((0, 0),) * 4
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    extra_norm_every: int = 0
    use_mask_token: bool = False
    remat_policy: str = 'none'
    sequential_attention: Tuple[int, ...] = ()
    attention_chunk_size: int = 8
    sequential_mlp: Tuple[int, ...] = ()
    mlp_chunk_tokens: int = 8192
    norm_placement: str = 'res_post'
    attention: str = 'cosine'
    position_bias: str = 'log_cpb'
    qkv_bias: str = 'qv'
    patch_merging: str = 'v2'
    strict_img_size: bool = True
    window_padding: str = 'timm'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # -- static geometry --------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def stage_dims(self) -> Tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(self.num_stages))

    @property
    def stage_resolutions(self) -> Tuple[Pair, ...]:
        """Feature map of each stage at img_size (odd sides round up: merging pads them, as in timm)."""
        return self.feature_resolutions(self.img_size)

    def feature_resolutions(self, img_size: Pair) -> Tuple[Pair, ...]:
        """Feature map of each stage for an input of `img_size`."""
        h, w = img_size[0] // self.patch_size, img_size[1] // self.patch_size
        return tuple((-(-h // 2 ** i), -(-w // 2 ** i)) for i in range(self.num_stages))

    @property
    def switches(self) -> Switches:
        """The five ablation fields as the one value handed down to every stage, block and attention."""
        return Switches(**{k: getattr(self, k) for k in SWITCHES})

    @property
    def is_swin_v1(self) -> bool:
        """Every switch at its Swin V1 value (the model is Swin Transformer V1)."""
        return all(getattr(self, k) == v for k, v in SWIN_V1.items())

    def stage_windows(self) -> Tuple[Tuple[Pair, Pair], ...]:
        """Per stage: (window, shift of the odd blocks) as the blocks will use them."""
        out = []
        for res, win in zip(self.stage_resolutions, self.window_size):
            out.append(window_and_shift(res, tuple(win), (win[0] // 2, win[1] // 2),
                                        WINDOW_PADDING[self.window_padding][1]))
        return tuple(out)

    # -- checks (checks.py): the errors users see at create_model and at the first call ----------
    def geometry_errors(self) -> list:
        """Every reason this configuration cannot run, as sentences (empty when it can)."""
        return checks.geometry_errors(self)

    def valid_sizes_near(self, size: int, axis: int = 0, count: int = 2) -> list:
        """The nearest image sides (along `axis`) this configuration accepts."""
        return checks.valid_sizes_near(self, size, axis=axis, count=count)

    def option_errors(self) -> list:
        """Every invalid memory or ablation switch, as sentences (empty when all are valid)."""
        return checks.option_errors(self, SWITCHES, tuple(WINDOW_PADDING))

    def check_config(self):
        checks.check_config(self, SWITCHES, tuple(WINDOW_PADDING))

    def check_input(self, x: jax.Array):
        checks.check_input(self, x)

    # -- modules ----------------------------------------------------------------------------------
    def setup(self):
        self.check_config()
        self.patch_embed = PatchEmbed(embed_dim=self.embed_dim, patch_size=self.patch_size, dtype=self.dtype,
                                      param_dtype=self.param_dtype)
        self.pos_drop = nn.Dropout(self.drop_rate)
        if self.use_mask_token:
            self.mask_token = self.param('mask_token', trunc_normal_init(0.02), (self.embed_dim,),
                                         self.param_dtype)

        total = sum(self.depths)
        rates = np.linspace(0.0, self.drop_path_rate, total) if total > 1 else np.zeros(total)
        stages, start = [], 0
        for i in range(self.num_stages):
            stages.append(SwinTransformerV2Stage(
                dim=self.stage_dims[i], depth=self.depths[i], num_heads=self.num_heads[i],
                resolution=self.stage_resolutions[i], window=tuple(self.window_size[i]),
                pretrained_window=tuple(self.pretrained_window_sizes[i]), downsample=i > 0,
                mlp_ratio=self.mlp_ratio, drop=self.drop_rate, attn_drop=self.attn_drop_rate,
                drop_path=tuple(float(r) for r in rates[start:start + self.depths[i]]),
                extra_norm_every=self.extra_norm_every,
                attention_chunk=self.attention_chunk_size if i in self.sequential_attention else 0,
                mlp_chunk=self.mlp_chunk_tokens if i in self.sequential_mlp else 0,
                remat_policy=self.remat_policy, window_padding=self.window_padding, switches=self.switches,
                dtype=self.dtype,
                param_dtype=self.param_dtype, name=f'layers_{i}'))
            start += self.depths[i]
        self.layers = stages
        self.norm = layer_norm('norm', dtype=self.dtype, param_dtype=self.param_dtype)
        if self.num_classes > 0:
            self.head = dense(self.num_classes, name='head', dtype=self.dtype, param_dtype=self.param_dtype)

    def features(self, x: jax.Array, train: bool = False, mask: Optional[jax.Array] = None) -> list:
        """The stage outputs [B, H/s, W/s, C_i] for strides s = 4, 8, 16, 32 (before downsampling).

        mask: optional [B, H/patch, W/patch] token mask (1 = masked) for SimMIM; needs use_mask_token.
        """
        self.check_input(x)
        x = self.patch_embed(x.astype(self.dtype))
        if mask is not None:
            x = self.apply_mask(x, mask)
        x = self.pos_drop(x, deterministic=not train)
        outs = []
        for stage in self.layers:
            x = stage(x, not train)
            outs.append(x)
        return outs

    def apply_mask(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """SimMIM: the learned `mask_token` in place of the patch tokens where `mask` is 1."""
        if not self.use_mask_token:
            raise ValueError('a token mask needs a model built with use_mask_token=True (SimMIM); '
                             'create_model(name, use_mask_token=True)')
        if tuple(mask.shape) != tuple(x.shape[:3]):
            raise ValueError(f'mask must have shape [batch, H/patch, W/patch] = {tuple(x.shape[:3])}, '
                             f'got {tuple(mask.shape)}')
        m = mask.astype(x.dtype)[..., None]
        return x * (1 - m) + self.mask_token.astype(x.dtype) * m

    def pooled_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Final LayerNorm and global average pool: [B, num_features]."""
        x = self.norm(self.features(x, train)[-1])
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.pooled_features(x, train)
        if self.num_classes > 0:
            x = self.head(x)
        return x


def abstract_variables(model: SwinTransformerV2) -> dict:
    """The variables `model.init` would create, as `jax.ShapeDtypeStruct`s (nothing is computed)."""
    x = jax.ShapeDtypeStruct((1, *model.img_size, model.in_chans), jnp.float32)
    return flax.core.unfreeze(jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
