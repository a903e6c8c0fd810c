"""The attention core switch (`attention_impl`): 'dot_product_attention' computes the numbers of
'default', and 'cudnn' names every requirement it cannot meet.

* 'dot_product_attention' vs 'default' on CPU in float32, train mode: logits, the gradient of every
  parameter and the gradient of the images agree to 1e-5 of each tensor's largest magnitude, for
  SwinV2 (cosine attention, log CPB, q/v biases), for Swin V1 (every switch at its V1 value: dot
  product attention, the bias table, the qkv bias, pre-norm, V1 merging) at a size that needs
  padding (strict_img_size=False), and with sequential attention (linear CPB, pre-norm); every
  configuration has shifted (masked) windows;
* the parameter tree does not depend on the core (the same checkpoints load);
* 'cudnn' builds on a CPU host (a cuDNN-trained model's checkpoint must load there) but fails at
  its first call naming the GPU requirement and the swap; a float32 dtype fails at create_model;
  the shape rules
  (head dim a multiple of 8, at most 128 before Hopper, an even token count to train) are checked
  as if on a GPU, and Swin V1's window 7 (49 tokens) fails at the first training call;
* attention dropout is refused by the fused cores, and an unknown name lists the valid ones.

Parameters are random everywhere (`test_memory.random_params`: the official zero post-norms would
make every attention branch vanish from the output).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from swinv2_jax import create_model
from swinv2_jax.models import checks
from test_memory import fast_jit, max_rel_err, random_params  # tests/test_memory.py's helpers

V2 = 'swinv2_tiny_window8_256'
V1 = 'swin_tiny_patch4_window7_224'
# Two stages of 16x16 and 8x8 tokens at window 4 (16 and 4 windows; the second block of each
# stage shifted and masked); one head in stage 0 and two in stage 1.
TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), img_size=64, window_size=4, num_classes=10,
            drop_path_rate=0.2)
RTOL = 1e-5
CASES = {
    'swinv2': (V2, dict(), (64, 64)),
    # 60x44 images: 15x11 tokens padded to 16x12 for the windows, stage 1 padded to even sides first
    'swin_v1_padded': (V1, dict(strict_img_size=False), (60, 44)),
    'sequential_linear_cpb_pre_norm': (V2, dict(sequential_attention=(0, 1), attention_chunk_size=3,
                                                position_bias='linear_cpb', norm_placement='pre'), (64, 64)),
}


def logits_and_grads(model, params, x, y):
    def loss(p, images):
        logits = model.apply({'params': p}, images, train=True, rngs={'dropout': jax.random.PRNGKey(3)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def run(p, images):
        (_, logits), (g_params, g_images) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(p, images)
        return logits, traverse_util.flatten_dict(g_params), g_images
    return fast_jit(run)(params, x)


@pytest.mark.parametrize('case', list(CASES))
def test_dot_product_attention_matches_default(case):
    name, overrides, hw = CASES[case]
    model = create_model(name, **TINY, **overrides)
    fused = create_model(name, **TINY, **overrides, attention_impl='dot_product_attention')
    params = random_params(model)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, *hw, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 2), jnp.int32)
    want_logits, want_grads, want_dx = logits_and_grads(model, params, x, y)
    got_logits, got_grads, got_dx = logits_and_grads(fused, params, x, y)
    assert max_rel_err(want_logits, got_logits) < RTOL
    assert max_rel_err(want_dx, got_dx) < RTOL
    assert set(got_grads) == set(want_grads)
    errors = {'/'.join(k): max_rel_err(want_grads[k], got_grads[k]) for k in want_grads}
    assert max(errors.values()) < RTOL, sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    # the attention branch matters: a core that dropped it would not pass for the wrong reason
    assert np.abs(np.asarray(want_grads[('layers_0', 'blocks_1', 'attn', 'qkv', 'kernel')])).max() > 0


def test_parameters_do_not_depend_on_the_core():
    shapes = [jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), random_params(
        create_model(V1, **TINY, attention_impl=impl))) for impl in ('default', 'dot_product_attention')]
    assert shapes[0] == shapes[1]


def test_cudnn_on_cpu_names_its_requirements():
    with pytest.raises(ValueError) as e:
        create_model(V2, **TINY, attention_impl='cudnn')
    assert 'bfloat16 or float16' in str(e.value) and 'float32' in str(e.value)
    assert 'NVIDIA GPU' not in str(e.value)          # the device is the call's business
    model = create_model(V2, **TINY, attention_impl='cudnn', dtype='bfloat16')
    x = jax.ShapeDtypeStruct((1, TINY['img_size'], TINY['img_size'], 3), jnp.float32)
    with pytest.raises(ValueError) as e:
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    assert 'NVIDIA GPU' in str(e.value) and "'cpu'" in str(e.value)
    assert "model.clone(attention_impl='default')" in str(e.value)
    params = random_params(model.clone(attention_impl='default'))   # the same tree runs on the CPU
    assert jnp.isfinite(model.clone(attention_impl='default').apply({'params': params}, jnp.ones(x.shape))).all()


@pytest.mark.parametrize('kw, needle', [
    (dict(head_dims=[32, 24]), None),
    (dict(head_dims=[20]), 'multiple of 8'),
    (dict(head_dims=[192], backend=('cuda', (8, 0))), 'at most 128'),
    (dict(head_dims=[192]), None),                                  # Hopper: up to 256
    (dict(head_dims=[32], tokens=[49], training=True), '49'),
    (dict(head_dims=[32], tokens=[49], training=False), None),      # inference takes odd counts
    (dict(head_dims=[32], dtype=jnp.float32), 'float32'),
])
def test_cudnn_shape_rules(kw, needle):
    kw = dict(dict(backend=('cuda', (9, 0)), dtype=jnp.bfloat16), **kw)
    errors = checks.cudnn_errors(**kw)
    if needle is None:
        assert errors == []
    else:
        assert len(errors) == 1 and needle in errors[0], errors


def test_cudnn_refuses_to_train_swin_v1_window_7(monkeypatch):
    """As on a GPU: the configuration passes (bf16, head dim 32), the training call does not."""
    monkeypatch.setattr(checks, 'cuda_backend', lambda: ('cuda', (9, 0)))
    v1 = dict(embed_dim=64, depths=(2,), num_heads=(2,), img_size=56, num_classes=10)
    params = random_params(create_model(V1, **v1))
    model = create_model(V1, **v1, attention_impl='cudnn', dtype='bfloat16')
    x = jax.ShapeDtypeStruct((2, 56, 56, 3), jnp.float32)
    with pytest.raises(ValueError, match=r'even number of tokens.*\[49\].*window_size=8'):
        jax.eval_shape(lambda p, x: model.apply({'params': p}, x, train=True,
                                                rngs={'dropout': jax.random.PRNGKey(0)}), params, x)


def test_fused_cores_refuse_attention_dropout():
    with pytest.raises(ValueError, match='attn_drop_rate=0'):
        create_model(V2, **TINY, attention_impl='dot_product_attention', attn_drop_rate=0.1)


def test_unknown_core_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'default', 'dot_product_attention', 'cudnn'"):
        create_model(V2, **TINY, attention_impl='flash')
