"""The building blocks of the SwinV2 model, as timm keeps them in `timm/layers/`.

LayerNorm, GELU, drop-path, the cosine logits and the softmax have hand-written gradients (custom
VJPs): the same numbers as autodiff of their plain formulas (tests/test_custom_vjp.py), with less
kept between the forward and the backward pass. Also here: the official initialisers and the
`dense`/`layer_norm` constructors with them; the MLP and patch embedding; the attention arithmetic
(float32 core, q/k/v and output projections in the head-major layout) and the sequential forms of
the attention and the MLP, which take the weights as arrays so that they can run inside `lax.map`
or `nn.scan`; the remat policies by name. The architecture is in `swin_transformer_v2.py`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

LN_EPS = 1e-5          # PyTorch LayerNorm default (Flax's is 1e-6)


# ----------------------------------------------------------------------------------------------
# Initialisers (the official ones, so that a model trained from scratch starts as timm's does)
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# LayerNorm (its gradient keeps only its input) and the Linear / LayerNorm constructors
# ----------------------------------------------------------------------------------------------

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
    """A `LayerNorm` with PyTorch's epsilon; `zero_init` starts its scale at 0 (SwinV2's res-post-norms,
    so that each block starts as the identity)."""
    init = nn.initializers.zeros if zero_init else nn.initializers.ones
    return LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, scale_init=init, name=name)


def dense(features: int, name: str, dtype: Dtype, param_dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    """A Linear with the official init (trunc_normal(0.02) weight, zero bias)."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=trunc_normal_init(0.02), bias_init=nn.initializers.zeros, name=name)


# ----------------------------------------------------------------------------------------------
# GELU (its gradient keeps only its input) and the MLP, whole or a chunk of tokens at a time
# ----------------------------------------------------------------------------------------------

@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x), written with erf as torch.nn.GELU() (jax.nn.gelu's exact form uses
    erfc, which is slower on XLA:CPU).

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


class Mlp(nn.Module):
    """fc1 (C -> hidden), exact GELU, dropout, fc2 (hidden -> C), dropout: timm's Mlp."""
    hidden: int
    drop: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        c = x.shape[-1]
        x = dense(self.hidden, name='fc1', dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = gelu(x)
        x = nn.Dropout(self.drop)(x, deterministic=deterministic)
        x = dense(c, name='fc2', dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.Dropout(self.drop)(x, deterministic=deterministic)


def chunk_windows(num_windows: int, chunk: int) -> int:
    """Windows (or token rows) per chunk: the largest divisor of `num_windows` not above `chunk`, so
    that every chunk has the same shape (one `lax.map` or `nn.scan` body)."""
    chunk = max(1, min(chunk, num_windows))
    while num_windows % chunk:
        chunk -= 1
    return chunk


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


# ----------------------------------------------------------------------------------------------
# Drop-path (its gradient keeps the per-sample mask only) and the patch embedding
# ----------------------------------------------------------------------------------------------

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
        return layer_norm('norm', dtype=self.dtype, param_dtype=self.param_dtype)(x)


# ----------------------------------------------------------------------------------------------
# Attention numerics: l2 normalisation, cosine logits, softmax (always float32)
# ----------------------------------------------------------------------------------------------

def _normalize_fwd(x: jax.Array, eps: float = 1e-12):
    """x * rsqrt(max(|x|^2, eps^2)), with the inverse norm and where eps did not bind: what the
    hand-written backward passes need to form the gradient from the output."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    rnorm = jax.lax.rsqrt(jnp.maximum(sq, eps * eps))
    return x * rnorm, rnorm, sq > eps * eps


def _normalize_bwd(y, rnorm, unclamped, gy):
    """Gradient of y = x * rsqrt(max(|x|^2, eps^2)) (`l2_normalize`) from y itself."""
    return rnorm * (gy - jnp.where(unclamped, y * jnp.sum(gy * y, axis=-1, keepdims=True), 0.0))


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis, written with rsqrt so that a zero vector has a finite
    gradient (the max/norm form has NaN gradients at 0; PyTorch's F.normalize does not).
    Plain autodiff; the attention uses `cosine_logits`, whose gradient is written by hand."""
    return _normalize_fwd(x, eps)[0]


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


def attention_core(q, k, v, *, scale, bias, mask, rng, drop: float, cosine: bool = True) -> jax.Array:
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


def fused_attention(q, k, v, *, scale, bias, mask, rng, drop: float, cosine: bool = True,
                    implementation: Optional[str] = None) -> jax.Array:
    """`attention_core`'s numbers from `jax.nn.dot_product_attention`, on [B, w, N, heads, d]
    windows (token-major: its BTNH layout, so nothing is transposed on the way in or out).

    The cosine normalisation and the per-head logit scale are applied to q and k in float32 before
    it (its own scale is then 1), the position bias plus the shift mask are its additive bias.
    q and k go back to v's dtype, as it requires one dtype for all three. Gradients are autodiff's
    of jax's implementation ('xla') or cuDNN's fused kernel (`implementation='cudnn'`): not this
    file's hand-written ones. There is no attention dropout here (jax's API has none): the model
    refuses `attn_drop_rate > 0` with this core (`checks.option_errors`).
    """
    if rng is not None:
        raise ValueError(f'attention dropout ({drop}) is not available with jax.nn.dot_product_attention; '
                         f'use attention_impl="default" or attn_drop_rate=0')
    b, w, n, h, d = q.shape
    q = q.astype(jnp.float32)
    k = k.astype(jnp.float32)
    if cosine:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * scale.reshape(h, 1)                               # [heads, 1, 1] -> over (N, heads, d)
    bias = bias[None]                                         # [1, heads, N, N]: shared by every window
    if mask is not None:  # the mask differs per window: one bias per (image, window) pair
        bias = jnp.broadcast_to((bias + mask[:, None])[None], (b, w, h, n, n)).reshape(b * w, h, n, n)
    if implementation == 'cudnn':
        bias = bias.astype(v.dtype)                           # cuDNN takes one dtype for all operands
    out = jax.nn.dot_product_attention(
        q.astype(v.dtype).reshape(b * w, n, h, d), k.astype(v.dtype).reshape(b * w, n, h, d),
        v.reshape(b * w, n, h, d), bias=bias, scale=1.0, implementation=implementation)
    return out.reshape(b, w, n, h, d)


# name -> (the q, k, v and head-output layout, the core): this project's core batches its matmuls
# over heads (head-major); jax.nn.dot_product_attention takes tokens before heads (BTNH).
ATTENTION_IMPLS = {
    'default': ('bwhnd', attention_core),
    'dot_product_attention': ('bwnhd', fused_attention),
    'cudnn': ('bwnhd', functools.partial(fused_attention, implementation='cudnn')),
}


def attention_impl(name: str):
    """(layout, core) of an `attention_impl` name; see `ATTENTION_IMPLS`."""
    if name not in ATTENTION_IMPLS:
        raise ValueError(f'unknown attention_impl {name!r}; valid: {", ".join(ATTENTION_IMPLS)}')
    return ATTENTION_IMPLS[name]


# ----------------------------------------------------------------------------------------------
# The attention projections in the head-major layout, and sequential (chunked) attention
# ----------------------------------------------------------------------------------------------

class QKVProjection(nn.Module):
    """The fused [C, 3C] qkv weight, applied as one matmul whose result is transposed once into
    the head-major [3, B, nW, heads, N, d] layout the attention matmuls batch over.

    q/k/v end up on the leading axis, so taking them apart is free, and the weight is used whole
    (a slice of it per q/k/v matmul is a weight copy in every call); the parameter stays the
    official fused `qkv.weight`. SwinV2 (`fused_bias=False`) has no bias of its own: q and v get the
    attention's q_bias/v_bias, k none. Swin V1 (`fused_bias=True`) has the plain Linear bias [3C] on
    q, k and v (`qkv.bias`).

    `weights` hands the parameters (cast to the compute dtype) to `project_qkv` for callers that
    apply them inside a JAX transform (sequential attention's `lax.map` body). `layout` is the
    output's: 'bwhnd' (head-major) or 'bwnhd' (token-major, for jax.nn.dot_product_attention).
    """
    dim: int
    num_heads: int
    fused_bias: bool = False
    layout: str = 'bwhnd'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        c = self.dim
        self.kernel = self.param('kernel', trunc_normal_init(0.02), (c, 3 * c), self.param_dtype)
        if self.fused_bias:
            self.bias = self.param('bias', nn.initializers.zeros, (3 * c,), self.param_dtype)

    def weights(self, q_bias: Optional[jax.Array] = None, v_bias: Optional[jax.Array] = None):
        """(kernel [C, 3, heads, d], (q, k, v) biases [heads, d] or None), in the compute dtype."""
        c, h = self.dim, self.num_heads
        kernel = self.kernel.astype(self.dtype).reshape(c, 3, h, c // h)
        if self.fused_bias:
            biases = tuple(self.bias.astype(self.dtype).reshape(3, h, c // h))
        else:
            biases = (q_bias, None, v_bias)
            biases = tuple(None if b is None else b.astype(self.dtype).reshape(h, c // h) for b in biases)
        return kernel, biases

    def __call__(self, x: jax.Array, q_bias: Optional[jax.Array] = None, v_bias: Optional[jax.Array] = None):
        return project_qkv(x, *self.weights(q_bias, v_bias), layout=self.layout)


def project_qkv(x: jax.Array, kernel: jax.Array, biases, layout: str = 'bwhnd') -> Tuple[jax.Array, ...]:
    """[B, w, N, C] tokens -> q, k, v in `layout` ([B, w, heads, N, d] 'bwhnd' or [B, w, N, heads, d]
    'bwnhd'); `QKVProjection.weights` gives the rest.

    A plain [tokens, C] x [C, 3C] matmul, then one transpose: written as a single einsum into the
    layout, XLA:CPU computes W^T X^T instead, with a transpose of the tokens before the matmul and
    a slower one after it (benchmarks/README.md has the figures).
    """
    c = kernel.shape[0]
    y = jnp.dot(x.reshape(-1, c).astype(kernel.dtype), kernel.reshape(c, -1))
    y = y.reshape(x.shape[:-1] + kernel.shape[1:])                   # [B, w, N, 3, heads, d]
    y = y.transpose(['bwnshd'.index(axis) for axis in 's' + layout])
    return tuple(y[i] if b is None else y[i] + (b[:, None] if layout == 'bwhnd' else b)
                 for i, b in enumerate(biases))


class HeadProjection(nn.Module):
    """The output Linear(C, C) (`proj`: kernel [C, C], bias [C]) applied to [B, nW, heads, N, d]
    head outputs: one transpose back to tokens [.., N, heads * d], then one matmul.
    `layout` as `QKVProjection`'s."""
    dim: int
    num_heads: int
    layout: str = 'bwhnd'
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
        return project_heads(x, *self.weights(), layout=self.layout)


def project_heads(x: jax.Array, kernel: jax.Array, bias: jax.Array, layout: str = 'bwhnd') -> jax.Array:
    """Head outputs in `layout` ([B, w, heads, N, d] or [B, w, N, heads, d]) -> [B, w, N, C]; a
    transpose to tokens, then a plain 2-D matmul, as in `project_qkv`."""
    x = x.transpose([layout.index(axis) for axis in 'bwnhd'])         # tokens before heads
    heads, d, c = kernel.shape
    y = jnp.dot(x.reshape(-1, heads * d).astype(kernel.dtype), kernel.reshape(heads * d, c))
    return y.reshape(x.shape[:3] + (c,)) + bias


def sequential_attention(x, *, qkv_weights, proj_weights, scale, bias, mask, rng, drop: float, chunk: int,
                         cosine: bool = True, impl: str = 'default') -> jax.Array:
    """Window attention of [B, nW, N, C] tokens a chunk of windows at a time (the paper's
    sequential self-attention): for each chunk, the qkv projection, `attention_core` and the
    output projection, so neither the [B, nW, heads, N, N] logits nor the full-size q, k, v and
    head outputs (and their gradients) exist at once. Returns [B, nW, N, C].

    The chunk body is rematerialised: without its own checkpoint the backward pass of `lax.map`
    would stack every chunk's probabilities again, and the logits would exist at once after all.
    The backward pass keeps each chunk's tokens only (a slice of x) and recomputes the rest, the
    projections included (about 3C^2 multiply-adds a token, against the attention's 2N C).
    Numerically identical to projecting, `attention_core` and projecting back over all windows.
    `impl` names the core (`ATTENTION_IMPLS`).
    """
    layout, core = attention_impl(impl)
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
        q, k, v = project_qkv(xc['x'], *qkv_weights, layout=layout)
        out = core(q, k, v, scale=scale, bias=bias, mask=xc['mask'], rng=xc['rng'], drop=drop, cosine=cosine)
        return project_heads(out, *proj_weights, layout=layout)

    out = jax.lax.map(body, xs)  # [chunks, B, chunk, N, C]
    return out.swapaxes(0, 1).reshape(b, nw, *out.shape[3:])


# ----------------------------------------------------------------------------------------------
# Activation checkpointing (remat) policies by name, for the `remat_policy` model field
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
