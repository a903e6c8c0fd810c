"""The Linen model as a Flax NNX module through `flax.nnx.bridge`, with loaded weights: the same
logits and the same gradients as the Linen model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import swinv2_jax

nnx = pytest.importorskip('flax.nnx')
from flax.nnx import bridge  # noqa: E402


def test_nnx_bridge_gives_the_linen_logits_and_gradients(tmp_path):
    model = swinv2_jax.create_model('swinv2_tiny_window8_256', img_size=32, embed_dim=16, depths=(1, 1),
                                    num_heads=(1, 2), window_size=4, num_classes=5)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 32, 32, 3), jnp.float32)
    linen_vars = jax.jit(model.init)(jax.random.key(1), x)
    swinv2_jax.save_converted(tmp_path / 'ckpt', linen_vars, model)

    # the README's recipe: converted weights into an NNX module
    linen_model, variables = swinv2_jax.load_converted(tmp_path / 'ckpt')
    nnx_model = bridge.ToNNX(linen_model, rngs=nnx.Rngs(0))
    bridge.lazy_init(nnx_model, x)                       # creates the (random) variables
    params = nnx.state(nnx_model, nnx.Param)
    nnx.replace_by_pure_dict(params, variables['params'])
    nnx.update(nnx_model, params)

    logits = nnx.jit(lambda m, images: m(images))(nnx_model, x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(jax.jit(model.apply)(linen_vars, x)))

    def loss_nnx(m):
        return jnp.sum(jnp.tanh(m(x)))

    def loss_linen(p):
        return jnp.sum(jnp.tanh(model.apply({'params': p}, x)))

    got = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.jit(nnx.grad(loss_nnx))(nnx_model)))
    want = traverse_util.flatten_dict(jax.jit(jax.grad(loss_linen))(linen_vars['params']))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-6, atol=1e-7,
                                   err_msg='/'.join(k))
    assert any(np.abs(np.asarray(v)).max() > 0 for v in want.values())
