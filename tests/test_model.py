"""Model tests: timm parity (logits, gradients, features), gradient health, official init, train
mode, input/config errors, the variant registry and the window-clipping rule.

The numerics tests use a reduced configuration of `swinv2_tiny_window8_256` (C=16, depths 1,2,1,1,
64x64 images, window 4) so that every stage is exercised in a few seconds on a 2-core CPU:
stage 0 (16x16) and stage 1 (8x8) run 4x4 windows, stage 1's second block is shifted (masked),
stages 2 (4x4) and 3 (2x2) clip the window to the feature map and run unshifted.
"""
from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax
from flax import traverse_util

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

import swinv2_jax  # noqa: E402
from swinv2_jax.models import resolve_name  # noqa: E402

BASE = 'swinv2_tiny_window8_256'
SMALL = dict(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), img_size=64, window_size=4,
             num_classes=10)
BATCH = 2
LOGIT_SCALE_MAX = math.log(100.0)

# The 12 timm variants of REFERENCE.md and their rounded parameter counts (millions; None: no count).
TIMM_VARIANTS = {
    'swinv2_tiny_window8_256': 28.3,
    'swinv2_tiny_window16_256': 28.3,
    'swinv2_small_window8_256': 49.7,
    'swinv2_small_window16_256': 49.7,
    'swinv2_base_window8_256': 87.9,
    'swinv2_base_window16_256': 87.9,
    'swinv2_base_window12_192': 109.3,
    'swinv2_base_window12to16_192to256': 87.9,
    'swinv2_base_window12to24_192to384': 87.9,
    'swinv2_large_window12_192': None,
    'swinv2_large_window12to16_192to256': 196.7,
    'swinv2_large_window12to24_192to384': 196.7,
}
PAPER_VARIANTS = {'swinv2_huge_window12_192': 658e6, 'swinv2_giant_window12_192': 3.0e9}


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------

def randomise_timm_(model: torch.nn.Module, seed: int = 0) -> None:
    """In place: LayerNorm weights 1 + 0.5 randn and biases 0.2 randn (every param named '*norm*'),
    q/v biases 0.2 randn, logit_scale log(10) + randn with head 0 of every block pushed past the
    clamp (so the clamp is always exercised, whatever the draw)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if 'norm' in name:
                p.copy_(1.0 + 0.5 * r if name.endswith('weight') else 0.2 * r)
            elif name.endswith(('q_bias', 'v_bias')):
                p.copy_(0.2 * r)
            elif name.endswith('logit_scale'):
                r = math.log(10.0) + r
                r[0] = LOGIT_SCALE_MAX + 0.5 + r[0].abs()
                p.copy_(r)


def randomise_jax_norms(params, seed: int = 0):
    """Every LayerNorm of the JAX params: scale 1 + 0.5 randn, bias 0.2 randn."""
    flat = traverse_util.flatten_dict(params)
    rng = np.random.default_rng(seed)
    out = {}
    for path, v in flat.items():
        if 'norm' in path[-2] and path[-1] in ('scale', 'bias'):
            r = rng.standard_normal(v.shape).astype(np.float32)
            v = jnp.asarray(1.0 + 0.5 * r if path[-1] == 'scale' else 0.2 * r)
        out[path] = v
    return traverse_util.unflatten_dict(out)


FAST_COMPILE = {'xla_backend_optimization_level': 0}  # XLA CPU compile ~2.5x faster, same numerics


def fast_jit(fn):
    """jax.jit compiled without the slow XLA backend optimisations (the tests are compile-bound);
    one executable per argument structure/shapes/dtypes."""
    jitted = jax.jit(fn)
    cache = {}

    def call(*args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        key = (tree, tuple((np.shape(a), str(a.dtype)) for a in leaves))
        if key not in cache:
            cache[key] = jitted.lower(*args).compile(compiler_options=FAST_COMPILE)
        return cache[key](*args)
    return call


def make_step(model):
    """jit: (params, x, w) -> (logits, d/dparams sum(logits * w), stage features)."""
    def loss_fn(params, x, w):
        logits = model.apply({'params': params}, x)
        return jnp.sum(logits * w), logits

    @fast_jit
    def step(params, x, w):
        (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, w)
        feats = model.apply({'params': params}, x, method='features')
        return logits, grads, feats
    return step


def flat(tree):
    return {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(tree))


def count_params(model) -> int:
    x = jax.ShapeDtypeStruct((1, *model.img_size, model.in_chans), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes['params']))


@functools.lru_cache(maxsize=None)
def timm_meta(name: str):
    """A timm model on the meta device (no memory allocated): for shapes, counts and geometry."""
    with torch.device('meta'):
        return timm.create_model(name, pretrained=False)


def inputs(seed: int = 0, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, SMALL['img_size'], SMALL['img_size'], 3)).astype(np.float32)
    w = rng.standard_normal((batch, SMALL['num_classes'])).astype(np.float32)
    return x, w


def assert_close_rel(got, want, rtol, what=''):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f'{what}: shape {got.shape} != {want.shape}'
    scale = np.abs(want).max()
    err = np.abs(got - want).max()
    if scale == 0:
        assert err == 0, f'{what}: reference is all zero, got max abs {err}'
    else:
        assert err <= rtol * scale, f'{what}: max abs err {err:.3g} > {rtol} * {scale:.3g}'


# ----------------------------------------------------------------------------------------------
# Fixtures (module scope: every jit compiles once)
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def small_model():
    return swinv2_jax.create_model(BASE, **SMALL)


@pytest.fixture(scope='module')
def step(small_model):
    return make_step(small_model)


@pytest.fixture(scope='module')
def init_params(small_model):
    x, _ = inputs()
    return fast_jit(small_model.init)(jax.random.PRNGKey(0), x)['params']


@pytest.fixture(scope='module')
def random_params(init_params):
    return randomise_jax_norms(init_params, seed=3)


@pytest.fixture(scope='module')
def parity(small_model, step):
    """timm and JAX, same randomised weights: logits, grads and stage features of both."""
    torch.manual_seed(0)
    tm = timm.create_model(BASE, pretrained=False, **SMALL).eval()
    randomise_timm_(tm, seed=1)
    variables = swinv2_jax.load_torch_weights(tm.state_dict(), small_model)
    x, w = inputs(seed=2)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    logits_t = tm(xt)
    (logits_t * torch.from_numpy(w)).sum().backward()
    with torch.no_grad():
        feats_t = tm.forward_intermediates(xt, intermediates_only=True)
    logits, grads, feats = step(variables['params'], x, w)
    return dict(timm=tm, x=x, xt=xt, logits_t=logits_t.detach().numpy(),
                grads_t={n: p.grad.numpy().copy() for n, p in tm.named_parameters()},
                feats_t=[f.numpy() for f in feats_t], logits=np.asarray(logits),
                grads=grads, feats=[np.asarray(f) for f in feats])


# ----------------------------------------------------------------------------------------------
# 1. timm parity: logits and gradients
# ----------------------------------------------------------------------------------------------

def test_logits_match_timm(parity):
    assert parity['logits'].shape == (BATCH, SMALL['num_classes'])
    assert_close_rel(parity['logits'], parity['logits_t'], 1e-4, 'logits')


def test_gradients_match_timm(parity, small_model):
    grads_j = swinv2_jax.export_torch_weights({'params': parity['grads']}, small_model, layout='timm')
    grads_t = parity['grads_t']
    assert set(grads_j) == set(grads_t), (sorted(set(grads_j) ^ set(grads_t)))
    for name, gt in grads_t.items():
        assert_close_rel(grads_j[name], gt, 1e-4, name)
    # The clamp was exercised: head 0 of every logit_scale is past log(100): zero gradient in both,
    # while the unclamped heads of a block with several heads get a gradient.
    scales = {n: p.detach().numpy() for n, p in parity['timm'].named_parameters()
              if n.endswith('logit_scale')}
    assert scales
    for name, s in scales.items():
        clamped = s.reshape(-1) > LOGIT_SCALE_MAX
        assert clamped[0]
        assert np.all(grads_t[name].reshape(-1)[clamped] == 0)
        assert np.all(grads_j[name].reshape(-1)[clamped] == 0)
        assert np.all(grads_j[name].reshape(-1)[~clamped] != 0), name


# ----------------------------------------------------------------------------------------------
# 2. Every parameter learns; no NaN/inf
# ----------------------------------------------------------------------------------------------

def test_every_parameter_gets_a_gradient(step, random_params):
    x, w = inputs(seed=4)
    logits, grads, feats = step(random_params, x, w)
    assert all_finite(logits) and all_finite(grads) and all_finite(feats)
    g = flat(grads)
    assert set(g) == set(flat(random_params))
    dead = {k: float(np.mean(v == 0)) for k, v in g.items() if np.any(v == 0)}
    assert not dead, f'parameters with zero-gradient entries (fraction): {dead}'


# ----------------------------------------------------------------------------------------------
# 3. Official initialisation; the zero-token case of the cosine normalisation
# ----------------------------------------------------------------------------------------------

def test_official_init(init_params, small_model):
    p = flat(init_params)
    block_norms = [k for k in p if re.search(r'blocks_\d+/norm[12]/(scale|bias)$', k)]
    assert len(block_norms) == 4 * sum(SMALL['depths'])
    for k in block_norms:
        assert np.all(p[k] == 0), f'{k} is not zero-initialised'
    other_norms = [k for k in p if re.search(r'norm/scale$', k)]
    assert len(other_norms) == 1 + 3 + 1  # patch embed, 3 patch mergings, final norm
    for k in other_norms:
        assert np.all(p[k] == 1), k
        assert np.all(p[k.replace('/scale', '/bias')] == 0), k
    scales = [k for k in p if k.endswith('logit_scale')]
    assert len(scales) == sum(SMALL['depths'])
    for k in scales:
        heads = SMALL['num_heads'][int(k.split('/')[0].split('_')[1])]
        assert p[k].shape == (heads, 1, 1)
        np.testing.assert_allclose(p[k], math.log(10.0), rtol=1e-7)
    qv = [k for k in p if k.endswith(('q_bias', 'v_bias'))]
    assert len(qv) == 2 * sum(SMALL['depths'])
    for k in qv:
        assert np.all(p[k] == 0), k
    # Linear layers: normal(0.02) kernels, zero biases.
    kernels = np.concatenate([v.ravel() for k, v in p.items() if k.endswith('kernel') and v.ndim == 2])
    assert abs(kernels.std() / 0.02 - 1) < 0.05
    assert abs(kernels.mean()) < 1e-3
    for k, v in p.items():
        if k.endswith('bias') and not k.startswith('patch_embed/proj'):
            assert np.all(v == 0), k


def test_official_init_is_finite(step, init_params):
    x, w = inputs(seed=5)
    logits, grads, feats = step(init_params, x, w)
    assert all_finite(logits) and all_finite(grads) and all_finite(feats)
    assert np.abs(np.asarray(logits)).max() > 0


@pytest.mark.parametrize('block_norms', ['official', 'randomised'])
def test_zero_image_gives_finite_gradients(step, init_params, block_norms):
    """All-zero image and zero patch-embed bias: the first block's tokens, and so its q and k, are
    exactly zero. The cosine normalisation must have a finite gradient there (as F.normalize)."""
    params = init_params
    if block_norms == 'randomised':  # nonzero cotangents into the attention; patch-embed norm kept
        params = {**randomise_jax_norms(init_params, seed=6), 'patch_embed': init_params['patch_embed']}
    pe = dict(params['patch_embed'])
    pe['proj'] = {**pe['proj'], 'bias': jnp.zeros_like(pe['proj']['bias'])}
    params = {**params, 'patch_embed': pe}
    x = np.zeros((BATCH, SMALL['img_size'], SMALL['img_size'], 3), np.float32)
    _, w = inputs(seed=7)
    logits, grads, feats = step(params, x, w)
    assert all_finite(logits), 'NaN/inf logits on an all-zero image'
    bad = [k for k, v in flat(grads).items() if not np.isfinite(v).all()]
    assert not bad, f'non-finite gradients on an all-zero image: {bad}'
    if block_norms == 'randomised':
        # q = k = 0 in the first block: no gradient reaches q_bias (logits are q.k), v_bias gets one.
        g = flat(grads)
        assert np.abs(g['layers_0/blocks_0/attn/v_bias']).max() > 0
        assert np.abs(g['patch_embed/proj/bias']).max() > 0


# ----------------------------------------------------------------------------------------------
# 4. Multi-scale features
# ----------------------------------------------------------------------------------------------

def test_features_shapes_and_match_timm(parity):
    feats = parity['feats']
    assert len(feats) == 4
    size, c = SMALL['img_size'], SMALL['embed_dim']
    for i, f in enumerate(feats):
        stride = 4 * 2 ** i
        assert f.shape == (BATCH, size // stride, size // stride, c * 2 ** i), (i, f.shape)
    # timm's forward_intermediates returns NCHW.
    for i, (f, ft) in enumerate(zip(feats, parity['feats_t'])):
        assert ft.shape == (BATCH, c * 2 ** i, size // 4 // 2 ** i, size // 4 // 2 ** i)
        assert_close_rel(f, ft.transpose(0, 2, 3, 1), 1e-4, f'stage {i} vs forward_intermediates')
    # timm's features_only model returns NHWC for SwinV2 (its state dict names stages layers_{i}).
    fm = timm.create_model(BASE, pretrained=False, features_only=True,
                           **{k: v for k, v in SMALL.items() if k != 'num_classes'}).eval()
    sd = {re.sub(r'^layers\.(\d+)', r'layers_\1', k): v for k, v in parity['timm'].state_dict().items()}
    wanted = fm.state_dict()
    assert set(wanted) <= set(sd)
    fm.load_state_dict({k: sd[k] for k in wanted}, strict=True)
    with torch.no_grad():
        feats_fo = [t.numpy() for t in fm(parity['xt'])]
    assert fm.feature_info.reduction() == [4, 8, 16, 32]
    for i, (f, ft) in enumerate(zip(feats, feats_fo)):
        assert ft.shape == f.shape, (i, ft.shape, f.shape)
        assert_close_rel(f, ft, 1e-4, f'stage {i} vs features_only')


# ----------------------------------------------------------------------------------------------
# 5. Train mode (dropout / stochastic depth)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('rates', [dict(drop_path_rate=0.9, drop_rate=0.0),
                                   dict(drop_path_rate=0.0, drop_rate=0.2, attn_drop_rate=0.2)],
                         ids=['drop_path', 'dropout'])
def test_train_mode(step, random_params, rates):
    model = swinv2_jax.create_model(BASE, **SMALL, **rates)
    x, w = inputs(seed=8)

    @fast_jit
    def run(params, x, key):
        variables = {'params': params}
        return (model.apply(variables, x),
                model.apply(variables, x, train=True, rngs={'dropout': key}))

    def train(seed):
        ev, tr = run(random_params, x, jax.random.PRNGKey(seed))
        return np.asarray(ev), np.asarray(tr)

    ev, tr1 = train(1)
    _, tr1b = train(1)
    _, tr2 = train(2)
    # Eval ignores the rates: same logits as the model built without dropout (drop_path_rate 0.1
    # is inactive in eval too).
    np.testing.assert_allclose(ev, np.asarray(step(random_params, x, w)[0]), rtol=1e-5, atol=1e-6)
    assert all_finite(tr1) and all_finite(tr2)
    assert not np.allclose(tr1, ev, rtol=1e-4, atol=1e-5), 'train mode equals eval mode'
    np.testing.assert_array_equal(tr1, tr1b)  # deterministic for a fixed key
    assert not np.allclose(tr1, tr2, rtol=1e-4, atol=1e-5), 'two dropout keys gave the same output'
    with pytest.raises(flax.errors.InvalidRngError):
        jax.eval_shape(lambda p, x: model.apply({'params': p}, x, train=True), random_params, x)


# ----------------------------------------------------------------------------------------------
# 6. Errors that say what is wrong and how to fix it
# ----------------------------------------------------------------------------------------------

def _apply_error(model, params, x) -> str:
    with pytest.raises(ValueError) as exc:
        model.apply({'params': params}, x)
    return str(exc.value)


def test_nchw_input_error(small_model, init_params):
    msg = _apply_error(small_model, init_params, np.zeros((2, 3, 64, 64), np.float32))
    assert 'NCHW' in msg and 'transpose' in msg and 'NHWC' in msg


def test_wrong_channels_error_names_problem(small_model, init_params):
    msg = _apply_error(small_model, init_params, np.zeros((2, 64, 64, 1), np.float32))
    assert '3 channels' in msg and '(2, 64, 64, 1)' in msg


def test_wrong_channels_error_names_fix(small_model, init_params):
    msg = _apply_error(small_model, init_params, np.zeros((2, 64, 64, 1), np.float32))
    assert 'in_chans' in msg or 'repeat' in msg or 'tile' in msg


def test_wrong_image_size_error(small_model, init_params):
    msg = _apply_error(small_model, init_params, np.zeros((2, 32, 32, 3), np.float32))
    assert '64x64' in msg and '32x32' in msg and 'resize' in msg and 'img_size' in msg


@pytest.mark.parametrize('dtype', [np.int32, np.uint8])
def test_integer_input_error(small_model, init_params, dtype):
    msg = _apply_error(small_model, init_params, np.zeros((2, 64, 64, 3), dtype))
    assert 'floating' in msg and np.dtype(dtype).name in msg and 'astype' in msg


def test_3d_input_error(small_model, init_params):
    msg = _apply_error(small_model, init_params, np.zeros((64, 64, 3), np.float32))
    assert '(64, 64, 3)' in msg and 'batch' in msg and 'x[None]' in msg


def test_unknown_model_error():
    with pytest.raises(ValueError) as exc:
        swinv2_jax.create_model('swinv2_nope')
    msg = str(exc.value)
    assert 'swinv2_nope' in msg
    for name in TIMM_VARIANTS:
        assert name in msg


def test_unknown_override_error():
    with pytest.raises(ValueError) as exc:
        swinv2_jax.create_model(BASE, windw_size=8)
    msg = str(exc.value)
    assert 'windw_size' in msg and 'override' in msg
    for valid in ('num_classes', 'img_size', 'window_size', 'drop_path_rate'):
        assert valid in msg


@pytest.mark.parametrize('img_size', [
    (200, 256),
    200,  # both sides invalid: each side's suggestions must not depend on the other side
])
def test_untileable_size_suggests_sizes_that_work(img_size):
    with pytest.raises(ValueError) as exc:
        swinv2_jax.create_model(BASE, img_size=img_size)
    msg = str(exc.value)
    assert 'img_size' in msg and 'window' in msg
    m = re.search(r'Sizes that work[^:]*:(.*?)\.(\s|$)', msg)
    assert m, f'no size suggested: {msg}'
    hints = dict(re.findall(r'(height|width): ([\d or]+)', m.group(1)))
    assert hints, msg
    h0, w0 = (img_size, img_size) if isinstance(img_size, int) else img_size
    for axis, sizes in hints.items():
        sizes = [int(s) for s in sizes.split(' or ')]
        assert sizes
        for s in sizes:  # each suggestion builds and runs (abstractly) at full size
            size = (s, 256) if axis == 'height' else (256, s)
            model = swinv2_jax.create_model(BASE, img_size=size)
            out = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
            assert 'params' in out
        # and they are the nearest: nothing valid strictly between them and the asked size
        orig = h0 if axis == 'height' else w0
        lo, hi = min(sizes + [orig]), max(sizes + [orig])
        for s in range(lo + 4 - lo % 4, hi, 4):
            if s in sizes:
                continue
            size = (s, 256) if axis == 'height' else (256, s)
            with pytest.raises(ValueError):
                swinv2_jax.create_model(BASE, img_size=size)


# ----------------------------------------------------------------------------------------------
# 7. Registry
# ----------------------------------------------------------------------------------------------

def test_list_models_and_aliases():
    names = swinv2_jax.list_models()
    for n in TIMM_VARIANTS:
        assert n in names
    for n in PAPER_VARIANTS:
        assert n in names
    base = swinv2_jax.list_models('*base*')
    assert base and all('base' in n for n in base)
    swin_v1 = {'swin_base_patch4_window7_224', 'swin_base_patch4_window12_384'}  # tests/test_ablation.py
    assert set(base) == {n for n in TIMM_VARIANTS if 'base' in n} | swin_v1
    assert swinv2_jax.list_models('nothing*') == []

    aliases = {
        'swinv2_base_patch4_window12to24_192to384_22kto1k_ft': 'swinv2_base_window12to24_192to384',
        'swinv2_tiny_patch4_window8_256': 'swinv2_tiny_window8_256',
        'swinv2_large_patch4_window12_192_22k': 'swinv2_large_window12_192',
        'microsoft/swinv2-tiny-patch4-window8-256': 'swinv2_tiny_window8_256',
        'microsoft/swinv2-base-patch4-window12to16-192to256-22kto1k-ft': 'swinv2_base_window12to16_192to256',
        'swinv2_base_window12_192.ms_in22k': 'swinv2_base_window12_192',
        'swinv2_tiny_window8_256.ms_in1k': 'swinv2_tiny_window8_256',
    }
    for alias, canonical in aliases.items():
        assert resolve_name(alias) == canonical, alias
        assert (swinv2_jax.model_fields(swinv2_jax.create_model(alias))
                == swinv2_jax.model_fields(swinv2_jax.create_model(canonical))), alias
    assert swinv2_jax.create_model('swinv2_base_window12_192.ms_in22k').num_classes == 21841
    assert swinv2_jax.create_model('swinv2_large_window12_192').num_classes == 21841
    assert swinv2_jax.create_model('swinv2_base_window12to24_192to384').num_classes == 1000


def test_parameter_counts():
    for name, rounded in TIMM_VARIANTS.items():
        model = swinv2_jax.create_model(name)
        tm = timm_meta(name)
        assert model.num_classes == tm.num_classes, name
        n = count_params(model)
        assert n == sum(p.numel() for p in tm.parameters()), name
        if rounded is not None:
            assert abs(n / 1e6 - rounded) <= 0.05, (name, n)
    for name, target in PAPER_VARIANTS.items():
        n = count_params(swinv2_jax.create_model(name))
        assert abs(n / target - 1) <= 0.02, (name, n)


# ----------------------------------------------------------------------------------------------
# 8. Window clipping: `resolution <= window` -> window = resolution, no shift
# ----------------------------------------------------------------------------------------------

def test_window_clipping_rule():
    m384 = swinv2_jax.create_model('swinv2_base_window12to24_192to384')
    assert m384.stage_resolutions == ((96, 96), (48, 48), (24, 24), (12, 12))
    assert m384.stage_windows() == (((24, 24), (12, 12)), ((24, 24), (12, 12)),
                                    ((24, 24), (0, 0)),     # 24 <= 24: unshifted (the `<=`)
                                    ((12, 12), (0, 0)))     # clipped to 12x12, unshifted
    m256 = swinv2_jax.create_model('swinv2_tiny_window8_256')
    assert m256.stage_windows()[:3] == (((8, 8), (4, 4)),) * 3
    assert m256.stage_windows()[3] == ((8, 8), (0, 0))    # 8x8 map, window 8: unshifted
    m192 = swinv2_jax.create_model('swinv2_base_window12_192')
    assert m192.stage_windows()[2:] == (((12, 12), (0, 0)), ((6, 6), (0, 0)))
    # Non-square: the rule applies per dimension.
    mns = swinv2_jax.create_model(BASE, **{**SMALL, 'img_size': (64, 128)})
    assert mns.stage_windows()[2] == ((4, 4), (0, 2))
    assert mns.stage_windows()[3] == ((2, 4), (0, 0))


@pytest.mark.parametrize('name', list(TIMM_VARIANTS))
def test_block_geometry_matches_timm(name):
    """Every block's window, shift, pretrained window and resolution are timm's."""
    model = swinv2_jax.create_model(name)
    tm = timm_meta(name)
    assert tuple(tm.patch_embed.img_size) == model.img_size
    assert len(tm.layers) == model.num_stages
    for i, (stage, (window, shift)) in enumerate(zip(tm.layers, model.stage_windows())):
        assert len(stage.blocks) == model.depths[i]
        for j, blk in enumerate(stage.blocks):
            assert tuple(blk.input_resolution) == model.stage_resolutions[i], (i, j)
            assert tuple(blk.window_size) == window, (i, j)
            assert tuple(blk.shift_size) == (shift if j % 2 else (0, 0)), (i, j)
            assert tuple(blk.attn.pretrained_window_size) == tuple(model.pretrained_window_sizes[i]), (i, j)
            assert blk.attn.num_heads == model.num_heads[i]
            assert blk.attn.qkv.in_features == model.stage_dims[i]
