"""The hand-written gradients (custom VJPs) against autodiff of the plain formulas they replace.

They exist to keep less memory between the forward and the backward pass; the numbers must not
change: values and gradients (float32: 1e-5 relative) in float32 and bfloat16, including the edge
cases the plain formulas handle (a zero q/k vector, a constant token for LayerNorm).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swinv2_jax.models import layers as m
from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2Block

jax.config.update('jax_default_matmul_precision', 'highest')


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def grads(f, *args):
    """Value and the gradient of a random projection of f's output w.r.t. every float argument."""
    out = f(*args)
    w = jax.random.normal(jax.random.PRNGKey(7), out.shape, jnp.float32)
    argnums = tuple(i for i, a in enumerate(args) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating))
    g = jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) * w), argnums=argnums)(*args)
    return out, g


def check(f_custom, f_ref, *args, tol=1e-5):
    out, g = grads(f_custom, *args)
    out_ref, g_ref = grads(f_ref, *args)
    assert out.dtype == out_ref.dtype and out.shape == out_ref.shape
    assert rel(out, out_ref) <= tol, rel(out, out_ref)
    for a, b in zip(g, g_ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert rel(a, b) <= tol, rel(a, b)


def _ref_layer_norm(x, scale, bias):
    return nn.LayerNorm(epsilon=m.LN_EPS, dtype=x.dtype, use_fast_variance=False).apply(
        {'params': {'scale': scale, 'bias': bias}}, x)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_layer_norm(dtype):
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    x = (jax.random.normal(k[0], (2, 5, 7, 48)) * 3 + 1).astype(dtype)
    x = x.at[0, 0, 0].set(2.0)             # a constant token: variance 0
    scale = jax.random.normal(k[1], (48,))
    bias = jax.random.normal(k[2], (48,))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    check(lambda x, s, b: m.layer_norm_fn(x, s, b, m.LN_EPS), _ref_layer_norm, x, scale, bias, tol=tol)


def test_layer_norm_module_matches_flax_layer_norm():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 32))
    ours = m.layer_norm('n', jnp.float32, jnp.float32)
    params = ours.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, params) == {'params': {'scale': (32,), 'bias': (32,)}}
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    np.testing.assert_allclose(ours.apply(params, x), _ref_layer_norm(x, **params['params']),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_gelu(dtype):
    x = (jax.random.normal(jax.random.PRNGKey(3), (4, 64)) * 3).astype(dtype)
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    check(m.gelu, lambda x: jax.nn.gelu(x, approximate=False), x, tol=tol)


def _ref_cosine_logits(q, k, scale):
    q = m.l2_normalize(q.astype(jnp.float32)) * scale
    k = m.l2_normalize(k.astype(jnp.float32))
    return jnp.einsum('bwhnd,bwhmd->bwhnm', q, k)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_cosine_logits(dtype):
    kq, kk, ks = jax.random.split(jax.random.PRNGKey(4), 3)
    q = jax.random.normal(kq, (2, 3, 4, 16, 8)).astype(dtype)
    k = jax.random.normal(kk, (2, 3, 4, 16, 8)).astype(dtype)
    q = q.at[0, 0, 0, 0].set(0.0)          # zero query and key vectors (a uniform image patch)
    k = k.at[1, 2, 1, 3].set(0.0)
    k = k.at[0, 1, 2, 2].set(1e-14)        # a norm below eps: the clamped branch
    scale = jnp.exp(jax.random.normal(ks, (4, 1, 1)))
    # bf16 inputs: the same float32 arithmetic on both sides, so float32 tolerances hold.
    check(m.cosine_logits, _ref_cosine_logits, q, k, scale)
    _, g = grads(m.cosine_logits, q, k, scale)
    assert all(bool(jnp.all(jnp.isfinite(t.astype(jnp.float32)))) for t in g)


def test_drop_samples():
    x = jax.random.normal(jax.random.PRNGKey(5), (6, 4, 4, 8))
    mask = jnp.asarray([True, False, True, True, False, True]).reshape(6, 1, 1, 1)
    check(lambda x: m.drop_samples(x, mask, 0.7),
          lambda x: jnp.where(mask, x / 0.7, jnp.zeros_like(x)), x)


def test_saved_residuals_of_a_block_are_the_lean_ones():
    """What the custom VJPs are for: a bf16 block keeps no float32 activation of token size."""
    from jax.ad_checkpoint import print_saved_residuals  # noqa: F401  (the API this mirrors)
    blk = SwinTransformerV2Block(dim=64, num_heads=2, resolution=(8, 8), window=(4, 4), shift=(2, 2),
                                 dtype=jnp.bfloat16)
    x = jnp.ones((2, 8, 8, 64), jnp.bfloat16)
    params = blk.init(jax.random.PRNGKey(0), x)
    _, vjp = jax.vjp(lambda p, x: blk.apply(p, x), params, x)
    residuals = [r for r in jax.tree.leaves(vjp) if hasattr(r, 'dtype')]
    tokens = 2 * 8 * 8
    big_f32 = [r.shape for r in residuals
               if r.dtype == jnp.float32 and r.size >= tokens * 64 and r.shape[0] == 2]
    assert not big_f32, big_f32
