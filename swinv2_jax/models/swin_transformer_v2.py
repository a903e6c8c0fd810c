"""Swin Transformer V2 in Flax Linen.

"Swin Transformer V2: Scaling Up Capacity and Resolution", Liu et al. (CVPR 2022).

Reads top to bottom like timm's `swin_transformer_v2.py`: window helpers and the constant tables
(computed with numpy once per shape, never per image), attention, block, patch merging, stage, model.
Numerics follow the official PyTorch code (microsoft/Swin-Transformer); see `shared/REFERENCE.md`:

* scaled cosine attention, `logit_scale` clamped at log(100), q/v biases and no k bias;
* log-spaced continuous position bias (CPB) from a 2-512-heads meta network, `16 * sigmoid`;
* res-post-norm: `x + drop_path(norm(branch(x)))`, the norms zero-initialised;
* shifted windows with the -100 mask; a window that does not fit the feature map is clipped to it
  and its shift disabled (`resolution <= window`, per dimension as in timm and Hugging Face);
* V2 patch merging (reduction then norm), placed at the start of stages 1-3 as in timm;
* SwinV2-H/G: one more LayerNorm on the main branch every `extra_norm_every` blocks.

The paper's ablations are switches, not forks (defaults = V2; all V1 values = Swin Transformer V1):
`norm_placement` 'res_post' | 'pre', `attention` 'cosine' | 'dot', `position_bias` 'log_cpb' |
'linear_cpb' | 'table', `qkv_bias` 'qv' | 'qkv', `patch_merging` 'v2' | 'v1'. With
`strict_img_size=False` the model takes images of any size (multiples of the patch size): feature
maps are padded to the window grid and to even sizes before merging, as timm's dynamic mode does.

Images are NHWC. Parameters are stored in `param_dtype`, computation runs in `dtype`; the cosine
normalisation, the position bias, the logit scale and the softmax always run in float32 (bf16/fp16
softmax of the large cosine logits is where the PyTorch versions produce NaNs).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Pair = Tuple[int, int]

LN_EPS = 1e-5          # PyTorch LayerNorm default (Flax's is 1e-6)
MASK_VALUE = -100.0    # official value added between tokens of different shifted regions
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # logit scale clamped at 100
CPB_HIDDEN = 512

# The ablation switches and their valid values; the first value is SwinV2's, the last Swin V1's.
NORM_PLACEMENTS = ('res_post', 'pre')             # LayerNorm on the branch output (V2) or input (V1)
ATTENTIONS = ('cosine', 'dot')                    # scaled cosine (V2) or q * d**-0.5 @ k^T (V1)
POSITION_BIASES = ('log_cpb', 'linear_cpb', 'table')  # CPB on log/linear coordinates, or V1's table
QKV_BIASES = ('qv', 'qkv')                        # q and v biases, no k bias (V2), or all three (V1)
PATCH_MERGINGS = ('v2', 'v1')                     # reduction then norm (V2), or norm then reduction
SWITCHES = dict(norm_placement=NORM_PLACEMENTS, attention=ATTENTIONS, position_bias=POSITION_BIASES,
                qkv_bias=QKV_BIASES, patch_merging=PATCH_MERGINGS)
SWIN_V1 = {k: v[-1] for k, v in SWITCHES.items()}


def trunc_normal_init(std: float = 0.02, bound: float = 2.0):
    """Official Linear init: normal(std) truncated at an *absolute* +-bound (timm's trunc_normal_).

    With std 0.02 and bound 2 the truncation is at 100 std: it never binds, so a clipped normal is
    the same distribution in practice (jax's truncated_normal truncates at +-2 std instead).
    """
    def init(key, shape, dtype=jnp.float32):
        return jnp.clip(std * jax.random.normal(key, shape, dtype), -bound, bound)
    return init


def torch_conv_init(fan_in: int):
    """PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def to_pair(x) -> Pair:
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


def window_and_shift(resolution: Pair, window: Pair, shift: Pair) -> Tuple[Pair, Pair]:
    """The window is clipped to a feature map no larger than it, and its shift disabled (`<=`)."""
    new_window = tuple(r if r <= w else w for r, w in zip(resolution, window))
    new_shift = tuple(0 if r <= w else s for r, w, s in zip(resolution, new_window, shift))
    return new_window, new_shift


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis, written with rsqrt so that a zero vector has a finite
    gradient (the max/norm form has NaN gradients at 0; PyTorch's F.normalize does not).
    Plain autodiff; the attention uses `cosine_logits`, whose gradient is written by hand."""
    return _normalize_fwd(x, eps)[0]


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

def _checkpoint_policy(*names):
    for n in names:  # the names moved between jax releases
        if hasattr(jax.checkpoint_policies, n):
            return getattr(jax.checkpoint_policies, n)
    raise AttributeError(f'jax.checkpoint_policies has none of {names}')


REMAT_POLICIES = {
    'none': None,                                     # save everything (no rematerialisation)
    'full': ('nothing_saveable',),                    # save only each block's input
    'dots': ('dots_saveable', 'checkpoint_dots'),     # save matmul outputs, recompute the rest
    'dots_no_batch': ('dots_with_no_batch_dims_saveable', 'checkpoint_dots_with_no_batch_dims'),
}


def remat_policy(name: str):
    """The `jax.checkpoint_policies` entry of a `remat_policy` name (None for 'none')."""
    if name not in REMAT_POLICIES:
        raise ValueError(f'unknown remat_policy {name!r}; valid: {", ".join(REMAT_POLICIES)}')
    names = REMAT_POLICIES[name]
    return None if names is None else _checkpoint_policy(*names)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis (params `scale`, `bias`), statistics and arithmetic in float32,
    output in `dtype`: the numbers of `nn.LayerNorm(use_fast_variance=False)`.

    Its gradient is written by hand (`layer_norm_fn`) so that the backward pass keeps only the input
    (in the compute dtype) and the per-token mean and 1/std: autodiff of the float32 formula keeps
    three float32 copies of the activations per norm, which are most of a block's saved memory.
    """
    epsilon: float = LN_EPS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param('scale', self.scale_init, (c,), self.param_dtype)
        bias = self.param('bias', self.bias_init, (c,), self.param_dtype)
        return layer_norm_fn(x, scale, bias, self.epsilon).astype(self.dtype)


def _ln_stats(x: jax.Array, eps: float):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return xf, mean, jax.lax.rsqrt(var + np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_fn(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    xf, mean, rstd = _ln_stats(x, eps)
    y = (xf - mean) * (rstd * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
    return y.astype(x.dtype), (x, mean, rstd, scale, bias)


def _layer_norm_bwd(eps, res, g):
    x, mean, rstd, scale, bias = res
    xhat = (x.astype(jnp.float32) - mean) * rstd
    g = g.astype(jnp.float32)
    axes = tuple(range(g.ndim - 1))
    dscale = jnp.sum(g * xhat, axis=axes).astype(scale.dtype)
    dbias = jnp.sum(g, axis=axes).astype(bias.dtype)
    gx = g * scale.astype(jnp.float32)
    dx = rstd * (gx - jnp.mean(gx, axis=-1, keepdims=True)
                 - xhat * jnp.mean(gx * xhat, axis=-1, keepdims=True))
    return dx.astype(x.dtype), dscale, dbias


layer_norm_fn.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def layer_norm(name: str, dtype: Dtype, param_dtype: Dtype, zero_init: bool = False) -> LayerNorm:
    init = nn.initializers.zeros if zero_init else nn.initializers.ones
    return LayerNorm(LN_EPS, dtype, param_dtype, scale_init=init, name=name)


def dense(features: int, name: str, dtype: Dtype, param_dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=trunc_normal_init(0.02), bias_init=nn.initializers.zeros, name=name)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x), written with erf as torch.nn.GELU() (jax.nn.gelu's exact form uses
    erfc, which XLA:CPU evaluates several times slower).

    The gradient Phi(x) + x * phi(x) is recomputed from the input in the backward pass, which then
    keeps only x (autodiff keeps Phi(x) and a float32 exp(-x^2/2) of the 4C-wide hidden layer too).
    """
    return x * (0.5 + 0.5 * jax.lax.erf(x * np.float32(1.0 / math.sqrt(2.0))).astype(x.dtype))


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    xf = x.astype(jnp.float32)
    cdf = 0.5 + 0.5 * jax.lax.erf(xf * np.float32(1.0 / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * xf * xf) * np.float32(1.0 / math.sqrt(2.0 * math.pi))
    return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


class QKVProjection(nn.Module):
    """The fused [C, 3C] qkv weight, applied as three matmuls straight into the head-major
    [B, nW, heads, N, d] layout the attention matmuls batch over.

    Separate matmuls hand q, k and v over without slicing a [.., 3C] result (a copy forward and a
    pad backward); the parameter stays the official fused `qkv.weight`. The change of layout
    between [N, C] tokens and [heads, N, d] is not free: XLA:CPU writes it as a transpose of each
    matmul's output, a third of this projection's time in a training step
    (benchmarks/hlo_profile.py). A fused [C, 3C] matmul then a transpose (timm's way), a
    `cjhd->jbwhnd` einsum, or token-major matmuls then a heads/tokens swap were each within 2% of
    this in a training step, timed interleaved on the CPU. SwinV2
    (`fused_bias=False`) has no bias of its own: q and v get the attention's q_bias/v_bias, k none.
    Swin V1 (`fused_bias=True`) has the plain Linear bias [3C] on q, k and v (`qkv.bias`).

    `weights` hands the parameters (cast to the compute dtype) to `project_qkv` for callers that
    apply them inside a JAX transform (sequential attention's `lax.map` body).
    """
    dim: int
    num_heads: int
    fused_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        c = self.dim
        self.kernel = self.param('kernel', trunc_normal_init(0.02), (c, 3 * c), self.param_dtype)
        if self.fused_bias:
            self.bias = self.param('bias', nn.initializers.zeros, (3 * c,), self.param_dtype)

    def weights(self, q_bias: Optional[jax.Array] = None, v_bias: Optional[jax.Array] = None):
        """(kernel [C, 3, heads, d], (q, k, v) biases [heads, 1, d] or None), in the compute dtype."""
        c, h = self.dim, self.num_heads
        kernel = self.kernel.astype(self.dtype).reshape(c, 3, h, c // h)
        if self.fused_bias:
            biases = tuple(self.bias.astype(self.dtype).reshape(3, h, 1, c // h))
        else:
            biases = (q_bias, None, v_bias)
            biases = tuple(None if b is None else b.astype(self.dtype).reshape(h, 1, c // h) for b in biases)
        return kernel, biases

    def __call__(self, x: jax.Array, q_bias: Optional[jax.Array] = None, v_bias: Optional[jax.Array] = None):
        return project_qkv(x, *self.weights(q_bias, v_bias))


def project_qkv(x: jax.Array, kernel: jax.Array, biases) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """[B, w, N, C] tokens -> q, k, v [B, w, heads, N, d] (`QKVProjection.weights` gives the rest)."""
    x = x.astype(kernel.dtype)
    out = []
    for i, b in enumerate(biases):
        y = jnp.einsum('bwnc,chd->bwhnd', x, kernel[:, i])
        out.append(y if b is None else y + b)
    return tuple(out)


class HeadProjection(nn.Module):
    """The output Linear(C, C) (`proj`: kernel [C, C], bias [C]) applied to [B, nW, heads, N, d]
    head outputs, contracting heads and d in one matmul: no transpose back to [N, heads, d]."""
    dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        c = self.dim
        self.kernel = self.param('kernel', trunc_normal_init(0.02), (c, c), self.param_dtype)
        self.bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)

    def weights(self) -> Tuple[jax.Array, jax.Array]:
        """(kernel [heads, d, C], bias [C]) in the compute dtype, for `project_heads`."""
        c, h = self.dim, self.num_heads
        return self.kernel.astype(self.dtype).reshape(h, c // h, c), self.bias.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return project_heads(x, *self.weights())


def project_heads(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """[B, w, heads, N, d] head outputs -> [B, w, N, C]."""
    return jnp.einsum('bwhnd,hdc->bwnc', x.astype(kernel.dtype), kernel) + bias


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample (rng stream 'dropout')."""
    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return drop_samples(x, mask, keep)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def drop_samples(x: jax.Array, mask: jax.Array, keep: float) -> jax.Array:
    """where(mask, x / keep, 0) for a per-sample mask [B, 1, ...]; the backward pass keeps the mask
    at that shape (autodiff of `where` keeps it broadcast to x's full size)."""
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def _drop_samples_fwd(x, mask, keep):
    return drop_samples(x, mask, keep), mask


def _drop_samples_bwd(keep, mask, g):
    return jnp.where(mask, g / keep, jnp.zeros_like(g)), None


drop_samples.defvjp(_drop_samples_fwd, _drop_samples_bwd)


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
      attention: 'cosine' (normalised q, k times exp(clamped `logit_scale`)) or 'dot'
        (q * head_dim**-0.5; no `logit_scale` parameter).
      position_bias: 'log_cpb' / 'linear_cpb' (the `cpb_mlp` meta network of log- or linear-spaced
        coordinates, then 16 * sigmoid) or 'table' (V1's learned `relative_position_bias_table`
        [(2Wh-1)(2Ww-1), heads], normal(0.02) init, used as is).
      qkv_bias: 'qv' (`q_bias`, `v_bias`, no key bias) or 'qkv' (the qkv Linear's own bias).
    """
    dim: int
    num_heads: int
    window: Pair
    pretrained_window: Pair = (0, 0)
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    chunk_size: int = 0
    attention: str = 'cosine'
    position_bias: str = 'log_cpb'
    qkv_bias: str = 'qv'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def position_bias_table(self) -> jax.Array:
        """[(2Wh-1)*(2Ww-1), heads] float32 bias per relative offset, before any squashing."""
        wh, ww = self.window
        if self.position_bias == 'table':
            table = self.param('relative_position_bias_table', trunc_normal_init(0.02),
                               ((2 * wh - 1) * (2 * ww - 1), self.num_heads), self.param_dtype)
            return table.astype(jnp.float32)
        coords = jnp.asarray(relative_coords_table(self.window, self.pretrained_window,
                                                   log_spaced=self.position_bias == 'log_cpb'))
        h = dense(CPB_HIDDEN, 'cpb_mlp_0', jnp.float32, self.param_dtype)(coords)
        h = nn.relu(h)
        table = dense(self.num_heads, 'cpb_mlp_2', jnp.float32, self.param_dtype, use_bias=False)(h)
        return table.reshape(-1, self.num_heads)

    def position_bias_matrix(self) -> jax.Array:
        """[heads, N, N] float32 bias; depends on the window and the weights only, not the images.

        The CPB's 16 * sigmoid is applied to the [(2Wh-1)(2Ww-1), heads] table before the gather
        (an elementwise function commutes with it: the same numbers), so the backward pass keeps
        the sigmoid of the small table, not of the [heads, N, N] matrix (20 MiB a block at
        window 24 with 16 heads).
        """
        table = self.position_bias_table()
        if self.position_bias != 'table':
            table = 16.0 * jax.nn.sigmoid(table)
        index = relative_position_index(self.window)
        bias = jnp.take(table, index.reshape(-1), axis=0).reshape(index.shape + (self.num_heads,))
        return bias.transpose(2, 0, 1)

    def logit_scale(self) -> jax.Array:
        """[heads, 1, 1] float32 factor on the queries; broadcasts over their (heads, N, d) axes."""
        heads = self.num_heads
        if self.attention == 'dot':
            return jnp.full((heads, 1, 1), (self.dim // heads) ** -0.5, jnp.float32)
        logit_scale = self.param('logit_scale', lambda k, s, d: jnp.full(s, math.log(10.0), d),
                                 (heads, 1, 1), self.param_dtype)
        return jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), LOGIT_SCALE_MAX))

    @nn.compact
    def __call__(self, x: jax.Array, mask: Optional[np.ndarray], deterministic: bool) -> jax.Array:
        """x: [B, nW, N, C]; mask: [nW, N, N] or None. Returns [B, nW, N, C]."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        qkv = QKVProjection(c, heads, self.qkv_bias == 'qkv', self.dtype, self.param_dtype, name='qkv')
        q_bias = v_bias = None
        if self.qkv_bias != 'qkv':
            q_bias = self.param('q_bias', nn.initializers.zeros, (c,), self.param_dtype)
            v_bias = self.param('v_bias', nn.initializers.zeros, (c,), self.param_dtype)
        proj = HeadProjection(c, heads, self.dtype, self.param_dtype, name='proj')

        scale = self.logit_scale()
        bias = self.position_bias_matrix()
        cosine = self.attention == 'cosine'
        mask = None if mask is None else jnp.asarray(mask)
        drop = 0.0 if deterministic else self.attn_drop
        rng = self.make_rng('dropout') if drop > 0.0 else None
        if self.chunk_size:
            out = sequential_attention(x, qkv.weights(q_bias, v_bias), proj.weights(), scale, bias, mask,
                                       rng, drop, self.chunk_size, cosine)
        else:
            q, k, v = qkv(x, q_bias, v_bias)                                 # [B, nW, heads, N, d]
            out = proj(attention_core(q, k, v, scale, bias, mask, rng, drop, cosine))
        return nn.Dropout(self.proj_drop)(out, deterministic=deterministic)


def attention_core(q, k, v, scale, bias, mask, rng, drop: float, cosine: bool = True) -> jax.Array:
    """Window attention of [B, w, heads, N, d] windows: softmax(q' k'^T + bias + mask) v, where
    q' = normalize(q) * scale and k' = normalize(k) (scaled cosine attention), or q' = q * scale and
    k' = k when `cosine` is False (dot-product attention; scale = head_dim**-0.5).

    The normalisation, logits and softmax run in float32 whatever the compute dtype; the
    probabilities come out in v's dtype for the second matmul.
    """
    # The scale multiplies the queries: N/d times less work than scaling the [.., N, N] logits,
    # in the forward and the backward pass.
    if cosine:
        logits = cosine_logits(q, k, scale)
    else:
        logits = jnp.einsum('bwhnd,bwhmd->bwhnm', q.astype(jnp.float32) * scale, k.astype(jnp.float32))
    logits = logits + bias
    if mask is not None:
        logits = logits + mask[None, :, None]
    probs = softmax(logits, v.dtype)
    if rng is not None:
        keep = jax.random.bernoulli(rng, 1.0 - drop, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - drop), 0.0).astype(v.dtype)
    return jnp.einsum('bwhnm,bwhmd->bwhnd', probs, v)


def _normalize_fwd(x: jax.Array, eps: float = 1e-12):
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    rnorm = jax.lax.rsqrt(jnp.maximum(sq, eps * eps))
    return x * rnorm, rnorm, sq > eps * eps


def _normalize_bwd(y, rnorm, unclamped, gy):
    """Gradient of y = x * rsqrt(max(|x|^2, eps^2)) (`l2_normalize`) from y itself."""
    return rnorm * (gy - jnp.where(unclamped, y * jnp.sum(gy * y, axis=-1, keepdims=True), 0.0))


@jax.custom_vjp
def cosine_logits(q: jax.Array, k: jax.Array, scale: jax.Array) -> jax.Array:
    """[B, w, heads, N, N] float32 logits cos(q_n, k_m) * scale of [B, w, heads, N, d] q and k
    (scale [heads, 1, 1]): q and k go to float32, are `l2_normalize`d, the queries scaled, one matmul.

    The backward pass keeps only q and k as they came (in the compute dtype) and their inverse
    norms, and normalises again from them: the same float32 values, bit for bit. Autodiff would
    keep q, k, their float32, normalised and scaled copies: five float32 tensors of q's size per
    block instead of two compute-dtype ones.
    """
    return _cosine_logits_fwd(q, k, scale)[0]


def _cosine_logits_fwd(q, k, scale):
    qn, rq, uq = _normalize_fwd(q.astype(jnp.float32))
    kn, rk, uk = _normalize_fwd(k.astype(jnp.float32))
    return jnp.einsum('bwhnd,bwhmd->bwhnm', qn * scale, kn), (q, rq, uq, k, rk, uk, scale)


def _cosine_logits_bwd(res, g):
    q, rq, uq, k, rk, uk, scale = res
    qn = q.astype(jnp.float32) * rq
    kn = k.astype(jnp.float32) * rk
    g_qs = jnp.einsum('bwhnm,bwhmd->bwhnd', g, kn)            # d logits / d (qn * scale)
    g_kn = jnp.einsum('bwhnm,bwhnd->bwhmd', g, qn * scale)
    g_scale = jnp.sum(g_qs * qn, axis=(0, 1, 3, 4)).reshape(scale.shape)
    return (_normalize_bwd(qn, rq, uq, g_qs * scale).astype(q.dtype),
            _normalize_bwd(kn, rk, uk, g_kn).astype(k.dtype), g_scale.astype(scale.dtype))


cosine_logits.defvjp(_cosine_logits_fwd, _cosine_logits_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(x: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Softmax over the last axis, computed in x's precision and returned in `dtype`, whose
    gradient is formed from that output alone.

    The backward pass then keeps only the returned probabilities: not exp(x) beside them, as
    autodiff of jax.nn.softmax does by default (a quarter less saved memory for a float32 model),
    and under bf16 compute not a float32 copy beside the bf16 one the second matmul needs (the
    gradient is formed from the bf16 probabilities, upcast). A custom VJP: reverse mode only.
    """
    unnormalized = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return (unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)).astype(dtype)


def _softmax_fwd(x, dtype):
    y = softmax(x, dtype)
    return y, (y, jnp.zeros((), x.dtype))


def _softmax_bwd(dtype, res, g):
    y, like = res
    y = y.astype(like.dtype)
    g = g.astype(like.dtype)
    return (y * (g - jnp.sum(y * g, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def chunk_windows(num_windows: int, chunk: int) -> int:
    """Windows per chunk: the largest divisor of the window count not above `chunk`."""
    chunk = max(1, min(chunk, num_windows))
    while num_windows % chunk:
        chunk -= 1
    return chunk


def sequential_attention(x, qkv_weights, proj_weights, scale, bias, mask, rng, drop: float, chunk: int,
                         cosine: bool = True) -> jax.Array:
    """Window attention of [B, nW, N, C] tokens a chunk of windows at a time (the paper's
    sequential self-attention): for each chunk, the qkv projection, `attention_core` and the
    output projection, so neither the [B, nW, heads, N, N] logits nor the full-size q, k, v and
    head outputs (and their gradients) exist at once. Returns [B, nW, N, C].

    The chunk body is rematerialised: without its own checkpoint the backward pass of `lax.map`
    would stack every chunk's probabilities again, and the logits would exist at once after all.
    The backward pass keeps each chunk's tokens only (a slice of x) and recomputes the rest, the
    projections included (about 3C^2 multiply-adds a token, against the attention's 2N C).
    Numerically identical to projecting, `attention_core` and projecting back over all windows.
    """
    b, nw = x.shape[:2]
    chunk = chunk_windows(nw, chunk)
    nc = nw // chunk

    def split(a):  # [B, nW, ...] -> [chunks, B, chunk, ...]
        return a.reshape(b, nc, chunk, *a.shape[2:]).swapaxes(0, 1)

    xs = dict(x=split(x),
              mask=None if mask is None else mask.reshape(nc, chunk, *mask.shape[1:]),
              rng=None if rng is None else jax.random.split(rng, nc))

    @jax.checkpoint
    def body(xc):
        q, k, v = project_qkv(xc['x'], *qkv_weights)
        out = attention_core(q, k, v, scale, bias, xc['mask'], xc['rng'], drop, cosine)
        return project_heads(out, *proj_weights)

    out = jax.lax.map(body, xs)  # [chunks, B, chunk, N, C]
    return out.swapaxes(0, 1).reshape(b, nw, *out.shape[3:])


class Mlp(nn.Module):
    hidden: int
    drop: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        c = x.shape[-1]
        x = dense(self.hidden, 'fc1', self.dtype, self.param_dtype)(x)
        x = gelu(x)
        x = nn.Dropout(self.drop)(x, deterministic=deterministic)
        x = dense(c, 'fc2', self.dtype, self.param_dtype)(x)
        return nn.Dropout(self.drop)(x, deterministic=deterministic)


def sequential_mlp(mlp: nn.Module, x: jax.Array, tokens: int, deterministic: bool) -> jax.Array:
    """`mlp` over [B, H, W, C] tokens a chunk of at most `tokens` tokens (whole rows) at a time:
    `nn.scan` over the chunks, the parameters broadcast, the body rematerialised, so the
    [B, H, W, mlp_ratio * C] hidden activations (the largest tensors of a block: 4x the tokens)
    never exist at once, forward or backward. The backward pass keeps each chunk's input only and
    recomputes fc1 and GELU (a third more MLP work). The same numbers (dropout aside: each chunk
    draws its own mask); the parameters keep `mlp`'s names.
    """
    b, h, w, c = x.shape
    rows = chunk_windows(b * h, max(1, tokens // w))
    n = b * h // rows

    def body(module, carry, xc):
        return carry, module(xc, deterministic)

    scan = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast='params',
                   split_rngs={'params': False, 'dropout': True}, length=n)
    _, out = scan(mlp, None, x.reshape(n, rows, w, c))
    return out.reshape(b, h, w, out.shape[-1])


def shifted_window_attention(attn: nn.Module, x: jax.Array, window: Pair, shift: Pair,
                             deterministic: bool) -> jax.Array:
    """Roll by -shift, zero-pad to the window grid, attend within windows, crop, roll back.

    The order (roll, then pad at the bottom/right) and the shifted-window mask built for the
    padded map are timm's: with a feature map the window divides, nothing is padded and this is
    the official computation. The padded tokens are zeros (not masked, as in timm's dynamic mode).
    """
    h, w = x.shape[1:3]
    shifted = any(shift)
    if shifted:
        x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
    x = pad_to_multiple(x, window)
    padded = tuple(x.shape[1:3])
    windows = attn(window_partition(x, window), shifted_window_mask(padded, window, shift), deterministic)
    x = window_reverse(windows, window, padded)[:, :h, :w]
    if shifted:
        x = jnp.roll(x, shift, axis=(1, 2))
    return x


class SwinTransformerV2Block(nn.Module):
    """(Shifted) window attention and MLP, each a residual branch.

    norm_placement 'res_post' (V2): x + drop_path(norm(f(x))), the norms zero-initialised so each
    block starts as the identity; 'pre' (V1): x + drop_path(f(norm(x))), the norms at ones.

    Attributes:
      resolution: the (H, W) feature map the block is built for (the window was clipped to it).
      window, shift: the window and shift actually used (see `window_and_shift`).
      attention_chunk: windows per `lax.map` step of sequential attention (0 = all at once).
      mlp_chunk: tokens (at most) per `nn.scan` step of the sequential MLP (0 = all at once).
      attention, position_bias, qkv_bias: see `WindowAttention`.
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
    norm_placement: str = 'res_post'
    attention: str = 'cosine'
    position_bias: str = 'log_cpb'
    qkv_bias: str = 'qv'
    mlp_chunk: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        post = self.norm_placement == 'res_post'
        attn = WindowAttention(
            self.dim, self.num_heads, self.window, self.pretrained_window, self.attn_drop, self.drop,
            self.attention_chunk, self.attention, self.position_bias, self.qkv_bias,
            dtype=self.dtype, param_dtype=self.param_dtype, name='attn')
        norm1 = layer_norm('norm1', self.dtype, self.param_dtype, zero_init=post)
        norm2 = layer_norm('norm2', self.dtype, self.param_dtype, zero_init=post)
        mlp = Mlp(int(self.dim * self.mlp_ratio), self.drop, self.dtype, self.param_dtype, name='mlp')
        drop_path = DropPath(self.drop_path)

        def attend(y):
            return shifted_window_attention(attn, y, self.window, self.shift, deterministic)

        def feed_forward(y):
            if self.mlp_chunk:
                return sequential_mlp(mlp, y, self.mlp_chunk, deterministic)
            return mlp(y, deterministic)

        if post:
            x = x + drop_path(norm1(attend(x)), deterministic)
            return x + drop_path(norm2(feed_forward(x)), deterministic)
        x = x + drop_path(attend(norm1(x)), deterministic)
        return x + drop_path(feed_forward(norm2(x)), deterministic)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution to C channels, then LayerNorm. NHWC in and out."""
    embed_dim: int
    patch_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        init = torch_conv_init(x.shape[-1] * p * p)
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                    param_dtype=self.param_dtype, kernel_init=init, bias_init=init, name='proj')(x)
        return layer_norm('norm', self.dtype, self.param_dtype)(x)


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
        if self.norm_first:
            x = layer_norm('norm', self.dtype, self.param_dtype)(x)
        x = dense(self.out_dim, 'reduction', self.dtype, self.param_dtype, use_bias=False)(x)
        if self.norm_first:
            return x
        return layer_norm('norm', self.dtype, self.param_dtype)(x)


class SwinTransformerV2Stage(nn.Module):
    """Optional patch merging, then `depth` blocks alternating unshifted and shifted windows.

    `extra_norm_every` > 0 adds a LayerNorm on the main branch after every that many blocks of the
    stage (SwinV2-H/G; see `SwinTransformerV2`). `remat_policy` wraps each block in `nn.remat`.
    The switches (norm_placement, attention, position_bias, qkv_bias, patch_merging) are
    `SwinTransformerV2`'s.
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
    norm_placement: str = 'res_post'
    attention: str = 'cosine'
    position_bias: str = 'log_cpb'
    qkv_bias: str = 'qv'
    patch_merging: str = 'v2'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        if self.downsample:
            x = PatchMerging(self.dim, self.patch_merging == 'v1', self.dtype, self.param_dtype,
                             name='downsample')(x)
        block = SwinTransformerV2Block
        if self.remat_policy != 'none':
            # argnum 0 is the module itself: `deterministic` (2) is a Python bool
            block = nn.remat(block, policy=remat_policy(self.remat_policy), static_argnums=(2,))
        for i in range(self.depth):
            target_shift = (0, 0) if i % 2 == 0 else (self.window[0] // 2, self.window[1] // 2)
            window, shift = window_and_shift(self.resolution, self.window, target_shift)
            x = block(
                self.dim, self.num_heads, self.resolution, window, shift, self.pretrained_window,
                self.mlp_ratio, self.drop, self.attn_drop, self.drop_path[i], self.attention_chunk,
                self.norm_placement, self.attention, self.position_bias, self.qkv_bias, self.mlp_chunk,
                dtype=self.dtype, param_dtype=self.param_dtype, name=f'blocks_{i}',
            )(x, deterministic)
            if self.extra_norm_every and (i + 1) % self.extra_norm_every == 0:
                x = layer_norm(f'extra_norm_{i}', self.dtype, self.param_dtype)(x)
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
    def is_swin_v1(self) -> bool:
        """Every switch at its Swin V1 value (the model is Swin Transformer V1)."""
        return all(getattr(self, k) == v for k, v in SWIN_V1.items())

    def stage_windows(self) -> Tuple[Tuple[Pair, Pair], ...]:
        """Per stage: (window, shift of the odd blocks) as the blocks will use them."""
        out = []
        for res, win in zip(self.stage_resolutions, self.window_size):
            out.append(window_and_shift(res, tuple(win), (win[0] // 2, win[1] // 2)))
        return tuple(out)

    def geometry_errors(self) -> list:
        """Every reason this configuration cannot run, as sentences (empty when it can)."""
        errors = []
        n = self.num_stages
        for field in ('num_heads', 'window_size', 'pretrained_window_sizes'):
            if len(getattr(self, field)) != n:
                errors.append(f'{field} has {len(getattr(self, field))} entries for {n} stages')
        if errors:
            return errors
        for dim, heads, i in zip(self.stage_dims, self.num_heads, range(n)):
            if dim % heads:
                errors.append(f'stage {i}: {dim} channels do not split into {heads} heads')
        h, w = self.img_size
        p = self.patch_size
        if h % p or w % p:
            errors.append(f'img_size {h}x{w} is not a multiple of the patch size {p}')
            return errors
        if not self.strict_img_size:
            return errors  # any map is padded to its window grid and to even sides before merging
        res = (h // p, w // p)
        for i in range(1, n):
            if res[0] % 2 or res[1] % 2:
                errors.append(f'stage {i - 1} feature map {res[0]}x{res[1]} is odd and cannot be '
                              f'merged 2x2 into stage {i}')
                return errors
            res = (res[0] // 2, res[1] // 2)
        for i, (res, (win, _)) in enumerate(zip(self.stage_resolutions, self.stage_windows())):
            if res[0] % win[0] or res[1] % win[1]:
                errors.append(f'stage {i} feature map {res[0]}x{res[1]} is not divisible by its '
                              f'window {win[0]}x{win[1]}')
        return errors

    def valid_sizes_near(self, size: int, axis: int = 0, count: int = 2) -> list:
        """The nearest image sides (along `axis`) this configuration accepts, for error messages.

        The rules are per axis (patch size, 2x2 merging, that axis' window), so a side is tested on
        a square image whose windows are this axis' windows: the other side cannot mask it.
        """
        windows = tuple((w[axis], w[axis]) for w in self.window_size)
        found = []
        step = self.patch_size
        for delta in range(0, 64 * step * 2 ** self.num_stages, step):
            for cand in sorted({size - size % step - delta, size - size % step + step + delta}):
                if cand <= 0 or cand in found:
                    continue
                probe = self.clone(parent=None, img_size=(cand, cand), window_size=windows)
                if not probe.geometry_errors():
                    found.append(cand)
            if len(found) >= count:
                break
        return sorted(found)

    def option_errors(self) -> list:
        """Every invalid memory switch, as sentences (empty when all are valid)."""
        errors, n = [], self.num_stages
        if self.remat_policy not in REMAT_POLICIES:
            errors.append(f'unknown remat_policy {self.remat_policy!r}; valid: {", ".join(REMAT_POLICIES)}')
        for field in ('sequential_attention', 'sequential_mlp'):
            stages = getattr(self, field)
            if not isinstance(stages, tuple) or not all(isinstance(i, int) for i in stages):
                errors.append(f'{field} must be a tuple of stage indices, got {stages!r}')
            elif any(not 0 <= i < n for i in stages):
                errors.append(f'{field} names stages {list(stages)}, but the stages are 0..{n - 1}')
        for field, unit in (('attention_chunk_size', 'windows'), ('mlp_chunk_tokens', 'tokens')):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errors.append(f'{field} must be an integer >= 1 ({unit} per step), got {v!r}')
        for field, valid in SWITCHES.items():
            if getattr(self, field) not in valid:
                errors.append(f'unknown {field} {getattr(self, field)!r}; valid: '
                              f'{", ".join(map(repr, valid))} (the first is SwinV2\'s, the last Swin V1\'s)')
        if not isinstance(self.strict_img_size, bool):
            errors.append(f'strict_img_size must be True or False, got {self.strict_img_size!r}')
        return errors

    def check_config(self):
        errors = self.option_errors()
        if errors:
            raise ValueError('invalid SwinTransformerV2 option: ' + '; '.join(errors) + '.')
        errors = self.geometry_errors()
        if errors:
            hints = []
            if len(self.window_size) == self.num_stages:
                for axis in (0, 1):
                    near = self.valid_sizes_near(self.img_size[axis], axis)
                    if near:
                        hints.append(f'{"height" if axis == 0 else "width"}: {" or ".join(map(str, near))}')
            hint = f' Sizes that work with these windows: {"; ".join(hints)}.' if hints else ''
            raise ValueError(f'SwinTransformerV2 cannot run at img_size={self.img_size[0]}x{self.img_size[1]} '
                             f'with window_size={[tuple(w) for w in self.window_size]}: '
                             + '; '.join(errors) + '.' + hint
                             + ' Pass another img_size or window_size to create_model, or '
                               'strict_img_size=False to pad the feature maps to the windows.')

    def check_input(self, x: jax.Array):
        if x.ndim != 4:
            raise ValueError(f'expected NHWC images of shape [batch, {self.img_size[0]}, {self.img_size[1]}, '
                             f'{self.in_chans}], got an array of shape {tuple(x.shape)}; add a batch axis '
                             f'with x[None] for a single image')
        if x.shape[-1] != self.in_chans:
            if x.shape[1] == self.in_chans:
                hint = '; it looks like NCHW: transpose with x.transpose(0, 2, 3, 1)'
            else:
                hint = (f'; for grayscale images repeat the channel (jnp.repeat(x, {self.in_chans}, axis=-1)), '
                        f'or build a model for {x.shape[-1]} channels with create_model(name, '
                        f'in_chans={x.shape[-1]}) (its patch embedding is then new and needs training)')
            raise ValueError(f'expected {self.in_chans} channels last (NHWC), got shape {tuple(x.shape)}{hint}')
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f'expected floating-point images, got dtype {x.dtype}; convert with '
                             f'x.astype(jnp.float32) and normalise (ImageNet mean/std) first')
        if not self.strict_img_size:
            p = self.patch_size
            if x.shape[1] % p or x.shape[2] % p:
                fit = lambda n: max(p, n + (-n) % p)  # noqa: E731
                raise ValueError(f'image sides must be multiples of the patch size {p}, got {x.shape[1]}x'
                                 f'{x.shape[2]}; pad or resize the images (e.g. zero-pad the bottom/right to '
                                 f'{fit(x.shape[1])}x{fit(x.shape[2])}), as timm also requires')
        elif tuple(x.shape[1:3]) != tuple(self.img_size):
            raise ValueError(f'this model was built for {self.img_size[0]}x{self.img_size[1]} images, got '
                             f'{x.shape[1]}x{x.shape[2]}; resize the images, or build the model for this '
                             f'size with create_model(name, img_size=({x.shape[1]}, {x.shape[2]})) and the '
                             f'same weights (the window must divide every stage: see the error it raises), '
                             f'or with strict_img_size=False to take images of any size')

    # -- modules ----------------------------------------------------------------------------------
    def setup(self):
        self.check_config()
        self.patch_embed = PatchEmbed(self.embed_dim, self.patch_size, self.dtype, self.param_dtype)
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
                remat_policy=self.remat_policy, norm_placement=self.norm_placement,
                attention=self.attention, position_bias=self.position_bias, qkv_bias=self.qkv_bias,
                patch_merging=self.patch_merging, dtype=self.dtype, param_dtype=self.param_dtype,
                name=f'layers_{i}'))
            start += self.depths[i]
        self.layers = stages
        self.norm = layer_norm('norm', self.dtype, self.param_dtype)
        if self.num_classes > 0:
            self.head = dense(self.num_classes, 'head', self.dtype, self.param_dtype)

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
