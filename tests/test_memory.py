"""The memory switches change memory, never the numbers.

* `remat_policy` ('full', 'dots', 'dots_no_batch'), `sequential_attention` (a chunk size that divides
  the window count and one that does not) and both together: logits and every gradient equal the
  plain model's to 1e-5 of each tensor's largest magnitude, in train mode with stochastic depth on
  (so a rematerialised block must also redraw the same drop-path masks);
* attention dropout under sequential attention: runs, finite, the same for the same rng;
* bf16 compute: bf16 logits, float32 parameters, logits near the float32 ones, finite gradients;
* the saved residuals (measured with `benchmarks/memory.py`, abstract shapes only) drop with remat
  and with sequential attention where attention dominates;
* invalid switch values raise ValueError naming the valid ones.

Configuration: `swinv2_tiny_window8_256` reduced to two stages (C=16, depths 2,2, heads 1,2), 64x64
images and window 4: stage 0 (16x16) has 16 windows and stage 1 (8x8) 4, both with a shifted (masked)
second block, and stage 1 starts with patch merging. Two stages rather than four: XLA:CPU compile
time dominates this file (one compile per variant), and the switches act per block and per window.
Parameters are random everywhere (not the official init, whose zero post-norms make every block
the identity and most gradients zero).
"""
from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from swinv2_jax import create_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import memory as memory_bench  # noqa: E402  (benchmarks/memory.py)

NAME = 'swinv2_tiny_window8_256'
TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), img_size=64, window_size=4, num_classes=10,
            drop_path_rate=0.2)
BATCH = 2
RTOL = 1e-5  # of each tensor's max |value|, for the logits and every gradient
# bf16 keeps 8 significant bits: each rounding is off by up to 2**-9 ~ 2e-3 relative (~3e-3 is
# often quoted for a full ulp). Every matmul input and output, residual add and LayerNorm output of
# the 4 blocks, the merge and the head is rounded, and the errors add up along the residual stream;
# q and k are rounded before the float32 cosine, whose error the logit scale (~10) then multiplies.
# Measured on this configuration over 20 parameter draws: median 8e-3, worst 1.7e-2 of max |logit|
# (1.0e-2 for the draw used here). A real fault (a wrong mask, bias or norm, or bf16 where float32
# is required) moves the logits by a large fraction of their max.
BF16_RTOL = 3e-2


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

FAST_COMPILE = ({'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False},
                {'xla_backend_optimization_level': 0}, None)


def fast_jit(fn):
    """jit, compiled without LLVM optimisation and XLA:CPU's fusion emitters where the backend takes
    those options (about 2x faster to compile): compiling, not running, is what this file spends
    its time on. Every variant compared is compiled alike."""
    cache = {}

    def call(*args):
        if 'c' not in cache:
            lowered = jax.jit(fn).lower(*args)
            for options in FAST_COMPILE:
                try:
                    cache['c'] = lowered.compile(options) if options else lowered.compile()
                    break
                except Exception:  # noqa: BLE001 - an option this backend/jax does not know
                    if options is None:
                        raise
        return cache['c'](*args)
    return call


def random_params(model, seed: int = 0):
    """Parameters of `model` drawn at random with numpy from the abstract shapes (no init run).

    The official init zeroes the post-norms, which makes every block the identity and most
    gradients zero; here LayerNorm scales are 1 + 0.2 N(0, 1) and biases 0.05 N(0, 1), q/v biases
    0.05 N(0, 1), logit scales log(10) + 0.2 N(0, 1), kernels 0.5 N(0, 1/fan_in), other biases
    0.05 N(0, 1).

    1e-5 of max is at the float32 round-off floor for a few gradients: those of the parameters that
    act through the softmax (logit scale, position-bias MLP, q bias) are sums whose terms cancel
    (each softmax row's logit gradient sums to zero), and the logit scale's has 1 or 2 elements,
    so its "max" can be a near-cancelled sum. Over 10 draws of these parameters, the plain model
    compiled with and without LLVM optimisation (the same math in another summation order)
    differed by up to 4.5e-5 of such a gradient in the worst draw, and sequential attention (which
    sums them chunk by chunk) by up to 6.8e-5; other tensors and the logits stay below 1e-5. This
    file uses draw 0, where that floor is 2.4e-6 and the largest switch difference 6.0e-6
    (sequential attention, a logit scale; remat: at most 8e-7). XLA:CPU is deterministic, so this
    is stable for a given jax; if an upgrade moves it past 1e-5, compare with that floor before
    suspecting the switch (a real fault, e.g. another dropout mask or a lost mask chunk, is O(1)).
    """
    shapes = memory_bench.abstract_params(model)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        shape, name = leaf.shape, path[-1]
        z = rng.standard_normal(shape)
        if name == 'logit_scale':
            v = math.log(10.0) + 0.2 * z
        elif name == 'scale':
            v = 1.0 + 0.2 * z
        elif name == 'kernel':
            v = 0.5 * z / math.sqrt(max(1, int(np.prod(shape[:-1]))))
        else:  # LayerNorm, q/v, dense and CPB biases
            v = 0.05 * z
        flat[path] = jnp.asarray(v, jnp.float32)
    return traverse_util.unflatten_dict(flat)


def batch():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((BATCH, 64, 64, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, TINY['num_classes'], BATCH), jnp.int32)
    return x, y


def loss_and_grads(model, x, y, rng):
    """params -> (train-mode logits, gradients of the cross-entropy w.r.t. every parameter)."""
    def loss(p):
        logits = model.apply({'params': p}, x, train=True, rngs={'dropout': rng})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()
        return ce, logits

    def run(p):
        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return logits, traverse_util.flatten_dict(grads)
    return run


def max_rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(a))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(b)))


SWITCHES = {
    'remat_full': dict(remat_policy='full'),
    'remat_dots': dict(remat_policy='dots'),
    'remat_dots_no_batch': dict(remat_policy='dots_no_batch'),
    # 16 and 4 windows: 4 divides both; 3 divides neither (2 per step are used instead)
    'sequential_chunk_divides': dict(sequential_attention=(0, 1), attention_chunk_size=4),
    'sequential_chunk_not_dividing': dict(sequential_attention=(0, 1), attention_chunk_size=3),
    'sequential_and_remat_full': dict(sequential_attention=(0, 1), attention_chunk_size=3, remat_policy='full'),
    # stage 0: 2 x 16 rows of 16 tokens, 40 tokens -> 2 rows a step; stage 1: 16 rows of 8 -> 4 rows
    'sequential_mlp': dict(sequential_mlp=(0, 1), mlp_chunk_tokens=40),
    'sequential_mlp_and_attention_remat_dots': dict(sequential_mlp=(1,), mlp_chunk_tokens=8,
                                                   sequential_attention=(0, 1), attention_chunk_size=2,
                                                   remat_policy='dots'),
    'bf16': dict(dtype=jnp.bfloat16),
}


def compute_results():
    """Logits and gradients of the plain model and of every variant, on the same parameters,
    images, labels and dropout rng, from ONE compiled function (XLA:CPU compiles the variants
    together in ~30% less time than one by one). Where a variant's HLO is the plain model's
    expression for expression (remat 'full' of these small blocks), XLA's CSE may compute both with
    the same instructions and the difference is exactly 0: that is a pass, not a blind spot, since
    any change of the math (another dropout mask, a missing mask chunk) leaves two expressions."""
    x, y = batch()
    rng = jax.random.PRNGKey(42)
    variants = {'plain': {}, **SWITCHES}
    fns = {k: loss_and_grads(create_model(NAME, **TINY, **v), x, y, rng) for k, v in variants.items()}
    params = random_params(create_model(NAME, **TINY))
    out = fast_jit(lambda p: {k: fn(p) for k, fn in fns.items()})(params)
    dead = [k for k, g in out['plain'][1].items() if not np.any(np.asarray(g))]
    # the randomised norms make every gradient non-trivial: nothing below tests zeros against zeros
    assert not dead, f'zero gradients: {dead}'
    return dict(params=params, x=x, y=y, **out)


@pytest.fixture(scope='module')
def results():
    return compute_results()


# ----------------------------------------------------------------------------------------------
# Numbers unchanged
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('switch', [k for k in SWITCHES if k != 'bf16'])
def test_switch_changes_no_numbers(results, switch):
    ref_logits, ref_grads = results['plain']
    logits, grads = results[switch]
    assert max_rel_err(ref_logits, logits) <= RTOL
    assert grads.keys() == ref_grads.keys()
    bad = {}
    for k, g in grads.items():
        err = max_rel_err(ref_grads[k], g)
        if err > RTOL:
            bad['/'.join(k)] = f'{err:.2e}'
    assert not bad, f'gradients off (relative to their max |value|): {bad}'


def test_sequential_attention_dropout_in_train_mode(results):
    """Attention dropout inside the chunked `lax.map`: finite, deterministic for a given rng,
    different for another one and from eval mode, with finite gradients."""
    model = create_model(NAME, **{**TINY, 'drop_path_rate': 0.0}, attn_drop_rate=0.3,
                         sequential_attention=(0, 1), attention_chunk_size=3)
    params, x, y = results['params'], results['x'], results['y']

    def loss(p, rng):
        logits = model.apply({'params': p}, x, train=True, rngs={'dropout': rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def step(p, rng):  # train step, and the eval-mode logits in the same compile
        return jax.value_and_grad(loss, has_aux=True)(p, rng), model.apply({'params': p}, x, train=False)
    step = fast_jit(step)
    ((_, a), ga), evaluated = step(params, jax.random.PRNGKey(1))
    ((_, a2), ga2), _ = step(params, jax.random.PRNGKey(1))
    ((_, b), _), _ = step(params, jax.random.PRNGKey(2))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(ga))
    np.testing.assert_array_equal(a, a2)
    for g1, g2 in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(ga2)):
        np.testing.assert_array_equal(g1, g2)
    assert max_rel_err(a, b) > 1e-3, 'another rng should drop other attention weights'
    assert max_rel_err(evaluated, a) > 1e-3, 'train mode should apply attention dropout'


# ----------------------------------------------------------------------------------------------
# bf16 compute
# ----------------------------------------------------------------------------------------------

def test_bf16_compute(results):
    model = create_model(NAME, **TINY, dtype=jnp.bfloat16)
    shapes = memory_bench.abstract_params(model)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    logits, grads = results['bf16']
    assert logits.dtype == jnp.bfloat16
    err = max_rel_err(results['plain'][0], logits)
    assert err <= BF16_RTOL, f'bf16 logits off by {err:.2e} of max |logit|'
    assert err > 0, 'bf16 compute gave bit-identical float32 logits: is dtype applied at all?'
    assert all(g.dtype == jnp.float32 for g in grads.values())
    assert all(np.all(np.isfinite(g)) for g in grads.values())


# ----------------------------------------------------------------------------------------------
# Saved residuals (abstract: nothing is allocated or compiled)
# ----------------------------------------------------------------------------------------------

# One stage at 32x32 tokens, window 8 (16 windows of 64 tokens), 4 heads of 4 channels: per token,
# each attention saves a few 4x64 softmax rows against 16-64 channels elsewhere, so attention holds
# most of the saved residuals (63% when measured).
ATTN_HEAVY = dict(embed_dim=16, depths=(2,), num_heads=(4,), img_size=128, window_size=8, num_classes=10,
                  drop_path_rate=0.0)


def residuals(**switches):
    return memory_bench.residual_report(create_model(NAME, **ATTN_HEAVY, **switches), BATCH)


def test_saved_residuals_drop_with_remat_and_sequential_attention():
    plain = residuals()
    full = residuals(remat_policy='full')
    dots = residuals(remat_policy='dots_no_batch')
    seq = residuals(sequential_attention=(0,), attention_chunk_size=2)
    seq_full = residuals(sequential_attention=(0,), attention_chunk_size=2, remat_policy='full')
    seq_mlp = residuals(sequential_mlp=(0,), mlp_chunk_tokens=256)
    bf16 = residuals(dtype=jnp.bfloat16)
    # measured (fractions of plain): full 0.07, dots_no_batch 0.23, sequential 0.55 (its attention
    # part 0.28), bf16 0.79 (the attention core and LayerNorm statistics stay float32)
    assert full['bytes'] * 4 <= plain['bytes']
    assert dots['bytes'] < 0.5 * plain['bytes']
    assert seq['bytes'] <= 0.7 * plain['bytes']
    assert seq['by_part']['attn'] <= 0.5 * plain['by_part']['attn']
    assert seq_full['bytes'] <= full['bytes']
    # the sequential MLP keeps its chunks' inputs (a C-wide reshape of the block's tokens), not
    # fc1's 4C-wide output and GELU's beside it (measured: 89% of the MLP's residuals go)
    assert plain['bytes'] - seq_mlp['bytes'] >= 0.75 * plain['by_part']['mlp']
    assert seq_mlp['by_part']['attn'] == plain['by_part']['attn']
    assert bf16['bytes'] < plain['bytes']
    assert plain['by_part']['attn'] > plain['bytes'] / 2, 'this configuration should be attention-bound'


def test_residual_helper_matches_jax():
    """benchmarks/memory.py's `saved_residuals` (public make_jaxpr) agrees with jax's own
    (`jax.ad_checkpoint.print_saved_residuals`' source, private) on what is saved."""
    private = pytest.importorskip('jax._src.ad_checkpoint')
    if not hasattr(private, 'saved_residuals'):
        pytest.skip('this jax has no saved_residuals')
    model = create_model(NAME, **ATTN_HEAVY, sequential_attention=(0,), remat_policy='dots')
    params = memory_bench.abstract_params(model)
    x, y, seed = memory_bench.abstract_batch(model, BATCH)
    loss = memory_bench.loss_fn(model)
    f = lambda p, x, y, s: loss(p, jax.lax.stop_gradient(x), y, s)  # noqa: E731
    ours = memory_bench.saved_residuals(f, params, x, y, seed)
    theirs = private.saved_residuals(f, params, x, y, seed)

    def total(rows, keep):
        return sum(memory_bench.nbytes(r[0]) for r in rows if keep(r))
    assert len(ours) == len(theirs)
    assert total(ours, lambda r: r[1] == 'activation') == total(
        theirs, lambda r: not r[1].startswith(('from the argument', 'from a constant', 'from a literal')))


# ----------------------------------------------------------------------------------------------
# Invalid values
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('override, expected', [
    (dict(remat_policy='bogus'), ['none', 'full', 'dots', 'dots_no_batch']),
    (dict(sequential_attention=(7,)), ['0..3']),
    (dict(sequential_attention=(-1,)), ['0..3']),
    (dict(attention_chunk_size=0), ['>= 1']),
    (dict(sequential_mlp=(4,)), ['sequential_mlp', '0..3']),
    (dict(mlp_chunk_tokens=0), ['mlp_chunk_tokens', '>= 1']),
])
def test_invalid_switch_values(override, expected):
    with pytest.raises(ValueError) as info:
        create_model(NAME, **override)
    for word in expected:
        assert word in str(info.value)
    assert str(next(iter(override.values()))).strip('(,)') in str(info.value)
