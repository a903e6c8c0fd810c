"""The Swin V1 <-> V2 ablation switches, Swin V1 itself, window/resolution transfer, inputs of any size.

- Swin V1 (`swin_*`, every switch at its V1 value): logit parity with timm's `SwinTransformer` (the
  real tiny at 224, and a reduced model), its official and Hugging Face (`swin.`) layouts; parameter
  counts and block geometry of every V1 variant against timm's.
- Inputs of any size (`strict_img_size=False`): parity with timm's dynamic mode for SwinV2-T/w8
  at 252x332 and 200x200, and for a reduced Swin V1 at an odd feature map.
- Each switch: the parameter tree changes by exactly the expected leaves; the logits change; where
  a switch only re-expresses the same function (qkv bias layout, a table holding the CPB's values)
  the logits are the same.
- Transfer: a window-8 checkpoint runs at windows 16 and 24, through `load_torch_weights`, Orbax
  (`load_converted(dir, model=...)`) and `init_from`; CPB parameters carry over, V1 tables are
  resized bicubically as torch's `F.interpolate` (the official recipe), with timm parity after.
- Config round trip of the new fields through `model_fields`.
Weights are random, with the zero/one-initialised norms, biases and tables randomised.
"""
from __future__ import annotations

import json
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')
import torch.nn.functional as F  # noqa: E402

import swinv2_jax  # noqa: E402
from swinv2_jax import checkpoints  # noqa: E402
from swinv2_jax.models import ABLATIONS, abstract_variables  # noqa: E402
from swinv2_jax.weights import transfer  # noqa: E402
from swinv2_jax.models.swin_transformer_v2 import SWIN_V1, SWITCHES, relative_coords_table  # noqa: E402
from swinv2_jax.train import init_from  # noqa: E402
from torch_refs import assert_close, nchw, randomize_, timm_model, to_torch_state  # noqa: E402

V1 = 'swin_tiny_patch4_window7_224'
V2 = 'swinv2_tiny_window8_256'
V1_NAMES = ['swin_tiny_patch4_window7_224', 'swin_small_patch4_window7_224', 'swin_base_patch4_window7_224',
            'swin_base_patch4_window12_384', 'swin_large_patch4_window7_224', 'swin_large_patch4_window12_384']
# Reduced models: every stage and a shifted block run; at 128/w4 no window is clipped (Hugging Face
# Swin V1 keeps its table at the configured window when it clips, unlike timm and the official code).
SMALL_V1 = dict(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), img_size=128, window_size=4,
                num_classes=10)
SMALL_V2 = dict(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), img_size=64, window_size=4,
                num_classes=10)
# Window transfer: trained at 256 / window 8; run at 256 / window 16 and 384 / window 24.
TRANSFER = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), num_classes=10)
SOURCE = dict(img_size=256, window_size=8)
TARGETS = {'w16_256': dict(img_size=256, window_size=16), 'w24_384': dict(img_size=384, window_size=24)}


def images(hw, batch=1, seed=0):
    return np.random.RandomState(seed).randn(batch, *hw, 3).astype(np.float32)


def logits_of(model, variables, x):
    return np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x)))


def flat(tree):
    return traverse_util.flatten_dict(dict(tree))


def init_params(model, seed=0):
    return jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, *model.img_size, 3)))['params']


def random_leaf(path, shape, rng):
    """A random value for one parameter, without the degenerate official init: norms around 1,
    biases, tables and the CPB's first layer large enough to matter (at its 0.02 init the CPB
    hardly depends on the coordinates), logit scales around log(10)."""
    r = rng.standard_normal(shape).astype(np.float32)
    is_norm = any('norm' in p for p in path[-2:])
    if is_norm and path[-1] == 'scale':
        return 1.0 + 0.5 * r
    if path[-1] == 'logit_scale':
        return np.float32(np.log(10.0)) + 0.5 * r
    if is_norm or path[-1] in ('q_bias', 'v_bias', 'bias'):
        return 0.2 * r
    if path[-1] == 'relative_position_bias_table' or path[-2] == 'cpb_mlp_0':
        return r
    if path[-2:] == ('proj', 'kernel') and len(shape) == 4:  # patch embedding conv
        return 0.1 * r
    return 0.02 * r


def randomised_params(model, seed=0):
    """Random variables for `model` from its abstract shapes (numpy: nothing is compiled)."""
    rng = np.random.default_rng(seed)
    shapes = flat(abstract_variables(model)['params'])
    return {'params': traverse_util.unflatten_dict(
        {p: jnp.asarray(random_leaf(p, s.shape, rng)) for p, s in shapes.items()})}


def assert_same_params(a, b):
    fa, fb = flat(a['params']), flat(b['params'])
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg='/'.join(k))


# ----------------------------------------------------------------------------------------------
# 1. Swin V1 against timm (and its official and Hugging Face layouts)
# ----------------------------------------------------------------------------------------------

def test_swin_v1_tiny_224_matches_timm():
    """The real Swin-T (224, window 7: a 7x7 last stage, one unshifted window)."""
    torch.manual_seed(0)
    ref = randomize_(timm_model(V1), seed=1)
    model = swinv2_jax.create_model(V1)
    assert model.is_swin_v1 and model.stage_windows()[3] == ((7, 7), (0, 0))
    x = images((224, 224))
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    assert_close(logits_of(model, variables, x), ref_logits, 1e-4)
    # and back: timm loads our export strictly and gives the same logits, bit for bit
    fresh = timm_model(V1)
    fresh.load_state_dict(to_torch_state(swinv2_jax.export_torch_weights(variables, model, 'timm')), strict=True)
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(nchw(x)).numpy(), ref_logits)


def _meta(name):
    with torch.device('meta'):
        return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize('name', V1_NAMES)
def test_swin_v1_variants_match_timm(name):
    """Parameter count, class count, and every block's window, shift and table shape are timm's."""
    model = swinv2_jax.create_model(name)
    tm = _meta(name)
    assert model.is_swin_v1 and model.num_classes == tm.num_classes
    n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(abstract_variables(model)))
    assert n == sum(p.numel() for p in tm.parameters())
    for i, (stage, (window, shift)) in enumerate(zip(tm.layers, model.stage_windows())):
        for j, blk in enumerate(stage.blocks):
            assert tuple(blk.window_size) == window, (i, j)
            assert tuple(blk.shift_size) == (shift if j % 2 else (0, 0)), (i, j)
            assert tuple(blk.attn.relative_position_bias_table.shape) == (
                (2 * window[0] - 1) * (2 * window[1] - 1), model.num_heads[i])
    hub = 'microsoft/' + name.replace('_', '-')
    assert swinv2_jax.models.resolve_name(hub) == name


@pytest.fixture(scope='module')
def small_v1():
    torch.manual_seed(0)
    ref = randomize_(timm_model(V1, **SMALL_V1), seed=2)
    model = swinv2_jax.create_model(V1, **SMALL_V1)
    x = images((128, 128), batch=2)
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    logits = logits_of(model, variables, x)
    return dict(ref=ref, model=model, x=x, ref_logits=ref_logits, variables=variables, logits=logits)


def test_small_swin_v1_matches_timm(small_v1):
    assert_close(small_v1['logits'], small_v1['ref_logits'], 1e-4)


def test_hugging_face_swin_v1(small_v1, tmp_path):
    """Our hf export is a hub-style checkpoint: transformers' own `from_pretrained` (with its
    renaming of the hub names) loads it with nothing missing, unexpected or mis-shaped, and gives our
    logits; its in-memory state dict converts back to the same parameters."""
    from safetensors.numpy import save_file
    from transformers import SwinConfig, SwinForImageClassification
    model, variables = small_v1['model'], small_v1['variables']
    sd = swinv2_jax.export_torch_weights(variables, model, 'hf')
    assert all(k.startswith(('swin.', 'classifier.')) for k in sd)
    assert 'swin.encoder.layers.0.blocks.0.attention.self.key.bias' in sd
    SwinConfig(image_size=128, patch_size=4, embed_dim=16, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
               window_size=4, num_labels=10, drop_path_rate=0.0, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5).save_pretrained(tmp_path)
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / 'model.safetensors'),
              metadata={'format': 'pt'})
    hf, info = SwinForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    with torch.no_grad():
        hf_logits = hf.eval()(pixel_values=nchw(small_v1['x'])).logits.numpy()
    assert_close(small_v1['logits'], hf_logits, 1e-4)
    assert_same_params(swinv2_jax.load_torch_weights(hf.state_dict(), model), variables)
    assert_same_params(swinv2_jax.load_torch_weights(sd, model), variables)
    # a SimMIM-pre-trained Hugging Face Swin V1 (SwinForMaskedImageModeling) carries a mask token
    sd_mim = dict(sd, **{'swin.embeddings.mask_token': np.zeros((1, 1, 16), np.float32)})
    assert_same_params(swinv2_jax.load_torch_weights(sd_mim, model), variables)


def test_official_swin_v1_layout(small_v1):
    """Official names: downsample at the end of stages 0-2, `head.`, the index and mask buffers (no
    coordinates table in V1); timm's own official->timm filter reads it back to the same logits."""
    from timm.models.swin_transformer import checkpoint_filter_fn
    model, variables = small_v1['model'], small_v1['variables']
    sd = swinv2_jax.export_torch_weights(variables, model, 'official')
    assert 'layers.0.downsample.reduction.weight' in sd and 'head.weight' in sd
    assert 'layers.1.blocks.1.attn_mask' in sd and 'layers.0.blocks.0.attn.relative_position_index' in sd
    assert not any('relative_coords_table' in k for k in sd)
    fresh = timm_model(V1, **SMALL_V1)
    fresh.load_state_dict(checkpoint_filter_fn(to_torch_state(sd), fresh), strict=True)
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(nchw(small_v1['x'])).numpy(), small_v1['ref_logits'])
    assert_same_params(swinv2_jax.load_torch_weights(sd, model), variables)


# ----------------------------------------------------------------------------------------------
# 2. Inputs of any size (strict_img_size=False) against timm's dynamic mode
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dynamic_v2():
    torch.manual_seed(0)
    ref = randomize_(timm_model(V2, strict_img_size=False), seed=3)
    model = swinv2_jax.create_model(V2, strict_img_size=False)
    return ref, model, swinv2_jax.load_torch_weights(ref.state_dict(), model)


# 252x332: a 63x83 patch grid (odd: merging pads), no stage divisible by the window; 200x200: square.
@pytest.mark.parametrize('hw', [(252, 332), (200, 200)])
def test_any_size_matches_timm_dynamic(dynamic_v2, hw):
    ref, model, variables = dynamic_v2
    x = images(hw)
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    assert_close(logits_of(model, variables, x), ref_logits, 1e-4)


def test_any_size_swin_v1_matches_timm_dynamic(small_v1):
    """V1 pads after its pre-norm (inside the attention branch), as timm: 132x92 -> a 33x23 grid."""
    model = small_v1['model'].clone(strict_img_size=False)
    ref = timm_model(V1, **SMALL_V1, strict_img_size=False)
    ref.load_state_dict(small_v1['ref'].state_dict())
    x = images((132, 92), batch=2)
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    assert_close(logits_of(model, small_v1['variables'], x), ref_logits, 1e-4)


def test_any_size_features(v2_base):
    """The parameters of a 64x64 model serve a 36x52 image: 9x13 -> 5x7 -> 3x4 -> 2x2 (odd sides
    padded before merging). (At the built size the logits are the strict model's: test_each_switch.)"""
    model, variables = v2_base[:2]
    loose = model.clone(strict_img_size=False)
    feats = jax.jit(lambda v, x: loose.apply(v, x, method=loose.features))(variables, jnp.asarray(images((36, 52))))
    assert [f.shape[1:3] for f in feats] == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert all(np.isfinite(np.asarray(f)).all() for f in feats)


def test_input_size_errors(v2_base):
    variables = v2_base[1]
    loose = swinv2_jax.create_model(V2, **SMALL_V2, strict_img_size=False)
    with pytest.raises(ValueError, match=r'multiples of the patch size 4, got 66x64.*68x64'):
        loose.apply(variables, jnp.zeros((1, 66, 64, 3)))
    strict = loose.clone(strict_img_size=True)
    with pytest.raises(ValueError, match='strict_img_size=False'):
        strict.apply(variables, jnp.zeros((1, 72, 64, 3)))
    with pytest.raises(ValueError, match='strict_img_size=False to pad'):
        swinv2_jax.create_model(V2, **{**SMALL_V2, 'img_size': 72})
    swinv2_jax.create_model(V2, **{**SMALL_V2, 'img_size': 72}, strict_img_size=False)  # builds


# ----------------------------------------------------------------------------------------------
# 3. Each switch changes what it should, and only that
# ----------------------------------------------------------------------------------------------

def _leaf_kinds(paths):
    """Paths without their stage/block indices: 'attn/logit_scale', 'downsample/norm/scale', ..."""
    out = set()
    for p in paths:
        name = '/'.join(x for x in p if not re.fullmatch(r'(layers|blocks)_\d+', x))
        out.add(re.sub(r'extra_norm_\d+', 'extra_norm', name))
    return out


# switch -> (removed, added, reshaped) leaf kinds relative to SwinV2; every block has them
FLIPS = {
    ('norm_placement', 'pre'): (set(), set(), set()),
    ('attention', 'dot'): ({'attn/logit_scale'}, set(), set()),
    ('position_bias', 'linear_cpb'): (set(), set(), set()),
    ('position_bias', 'table'): ({'attn/cpb_mlp_0/kernel', 'attn/cpb_mlp_0/bias', 'attn/cpb_mlp_2/kernel'},
                                 {'attn/relative_position_bias_table'}, set()),
    ('qkv_bias', 'qkv'): ({'attn/q_bias', 'attn/v_bias'}, {'attn/qkv/bias'}, set()),
    ('patch_merging', 'v1'): (set(), set(), {'downsample/norm/scale', 'downsample/norm/bias'}),
    ('extra_norm_every', 1): (set(), {'extra_norm/scale', 'extra_norm/bias'}, set()),
    ('strict_img_size', False): (set(), set(), set()),
}


@pytest.fixture(scope='module')
def v2_base():
    model = swinv2_jax.create_model(V2, **SMALL_V2)
    variables = randomised_params(model)
    x = images((64, 64), batch=2)
    return model, variables, x, logits_of(model, variables, x)


@pytest.mark.parametrize('flip', list(FLIPS), ids=lambda f: f'{f[0]}={f[1]}')
def test_each_switch(v2_base, flip):
    model, variables, x, base_logits = v2_base
    field, value = flip
    flipped = swinv2_jax.create_model(V2, **SMALL_V2, **{field: value})
    a, b = flat(abstract_variables(model)['params']), flat(abstract_variables(flipped)['params'])
    removed, added = a.keys() - b.keys(), b.keys() - a.keys()
    reshaped = {p for p in a.keys() & b.keys() if a[p].shape != b[p].shape}
    assert (_leaf_kinds(removed), _leaf_kinds(added), _leaf_kinds(reshaped)) == FLIPS[flip]

    # the flipped model on the base's parameters (new or reshaped leaves random)
    rng, base = np.random.default_rng(1), flat(variables['params'])
    params = {p: base[p] if p in a and a[p].shape == b[p].shape else jnp.asarray(random_leaf(p, b[p].shape, rng))
              for p in b}
    logits = logits_of(flipped, {'params': traverse_util.unflatten_dict(params)}, x)
    assert np.isfinite(logits).all()
    if field == 'strict_img_size':
        np.testing.assert_array_equal(logits, base_logits)  # nothing padded at the built size
    else:
        assert np.abs(logits - base_logits).max() > 1e-3 * np.abs(base_logits).max(), flip


def test_pre_norm_blocks_init_their_norms_to_ones():
    """V1's pre-norms start at ones (SwinV2's res-post-norms at zero: test_model's official init)."""
    from swinv2_jax.models.swin_transformer_v2 import Switches, SwinTransformerV2Block
    for placement, value in (('pre', 1.0), ('res_post', 0.0)):
        block = SwinTransformerV2Block(dim=16, num_heads=2, resolution=(8, 8), window=(4, 4), shift=(2, 2),
                                       switches=Switches(norm_placement=placement))
        params = jax.jit(block.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 16)))['params']
        for norm in ('norm1', 'norm2'):
            np.testing.assert_array_equal(np.asarray(params[norm]['scale']), value)
            np.testing.assert_array_equal(np.asarray(params[norm]['bias']), 0.0)


def test_qkv_bias_switch_re_expresses_the_same_function(v2_base):
    """'qkv' holding (q_bias, 0, v_bias) is SwinV2's attention: the switch moves no other number."""
    model, variables, x, base_logits = v2_base
    flipped = swinv2_jax.create_model(V2, **SMALL_V2, qkv_bias='qkv')
    params = {}
    for p, v in flat(variables['params']).items():
        if p[-1] == 'q_bias':
            v_bias = flat(variables['params'])[p[:-1] + ('v_bias',)]
            params[p[:-1] + ('qkv', 'bias')] = jnp.concatenate([v, jnp.zeros_like(v), v_bias])
        elif p[-1] != 'v_bias':
            params[p] = v
    logits = logits_of(flipped, {'params': traverse_util.unflatten_dict(params)}, x)
    np.testing.assert_allclose(logits, base_logits, rtol=0, atol=1e-5 * np.abs(base_logits).max())


def test_table_switch_re_expresses_the_same_function(v2_base):
    """A 'table' holding 16 * sigmoid(CPB(coordinates)) is SwinV2's attention: only the bias's
    parameterisation changes."""
    model, variables, x, base_logits = v2_base
    flipped = swinv2_jax.create_model(V2, **SMALL_V2, position_bias='table')
    src = flat(variables['params'])
    params = {p: v for p, v in src.items() if 'cpb_mlp_0' not in p and 'cpb_mlp_2' not in p}
    for i, (window, _) in enumerate(model.stage_windows()):
        for j in range(model.depths[i]):
            stem = (f'layers_{i}', f'blocks_{j}', 'attn')
            coords = relative_coords_table(window).reshape(-1, 2).astype(np.float64)
            h = np.maximum(coords @ np.asarray(src[stem + ('cpb_mlp_0', 'kernel')])
                           + np.asarray(src[stem + ('cpb_mlp_0', 'bias')]), 0)
            table = 16.0 / (1.0 + np.exp(-(h @ np.asarray(src[stem + ('cpb_mlp_2', 'kernel')]))))
            params[stem + ('relative_position_bias_table',)] = jnp.asarray(table, jnp.float32)
    logits = logits_of(flipped, {'params': traverse_util.unflatten_dict(params)}, x)
    np.testing.assert_allclose(logits, base_logits, rtol=0, atol=1e-5 * np.abs(base_logits).max())


def test_linear_cpb_coordinates():
    log, lin = relative_coords_table((4, 6)), relative_coords_table((4, 6), log_spaced=False)
    np.testing.assert_allclose(lin[..., 0][:, 0], np.arange(-3, 4) / 3)
    np.testing.assert_allclose(lin[..., 1][0], np.arange(-5, 6) / 5)
    np.testing.assert_allclose(log, np.sign(lin) * np.log2(8 * np.abs(lin) + 1) / 3, atol=1e-6)
    # transfer 8 -> 16 with pretrained window 8: linear coordinates pass 1 (up to 15/7)
    assert np.isclose(relative_coords_table((16, 16), (8, 8), log_spaced=False).max(), 15 / 7)


@pytest.mark.parametrize('field', list(SWITCHES))
def test_invalid_switch_values_name_the_valid_ones(field):
    valid = SWITCHES[field]
    with pytest.raises(ValueError, match=f'unknown {field} .nope.; valid: ' + re.escape(', '.join(map(repr, valid)))):
        swinv2_jax.create_model(V2, **{field: 'nope'})


def test_ablation_rows_build():
    for row, overrides in ABLATIONS.items():
        base = V1 if row.startswith('table6') else V2
        small = SMALL_V1 if base == V1 else SMALL_V2
        model = swinv2_jax.create_model(base, **small, **overrides)
        for k, v in overrides.items():
            assert getattr(model, k) == v, row
        abstract_variables(model)
    assert swinv2_jax.create_model(V1, **ABLATIONS['table6_res_post_norm_cosine']).attention == 'cosine'


# ----------------------------------------------------------------------------------------------
# 4. Window / resolution transfer: window 8 -> 16 and 24
# ----------------------------------------------------------------------------------------------

def test_bicubic_resize_is_torchs():
    rng = np.random.default_rng(0)
    for src, dst in (((13, 13), (23, 23)), ((15, 15), (47, 47)), ((23, 23), (13, 13)), ((7, 9), (15, 11))):
        x = rng.standard_normal((*src, 3))
        ref = F.interpolate(torch.from_numpy(x).permute(2, 0, 1)[None], size=dst, mode='bicubic',
                            align_corners=False)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(transfer.bicubic_resize(x, dst), ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match='not .2W-1.\\*\\*2'):
        transfer.table_window(14)


def official_table_resize(table: torch.Tensor, new_side: int) -> torch.Tensor:
    """microsoft/Swin-Transformer `utils.load_pretrained`: the table as a square image per head."""
    n, heads = table.shape
    side = int(n ** 0.5)
    grid = table.permute(1, 0).reshape(1, heads, side, side)
    out = F.interpolate(grid, size=(new_side, new_side), mode='bicubic')
    return out.reshape(heads, new_side * new_side).permute(1, 0)


@pytest.fixture(scope='module', params=['log_cpb', 'linear_cpb', 'table'])
def trained_w8(request, tmp_path_factory):
    """A 'window 8 checkpoint' of each position bias mode, saved with Orbax."""
    name = V1 if request.param == 'table' else V2
    model = swinv2_jax.create_model(name, **TRANSFER, **SOURCE, position_bias=request.param)
    variables = randomised_params(model, seed=4)
    directory = checkpoints.save_converted(tmp_path_factory.mktemp('w8') / 'ckpt', variables, model, name)
    return dict(name=name, mode=request.param, model=model, variables=variables, dir=directory)


def _target(trained, key):
    pretrained = {} if trained['mode'] == 'table' else dict(pretrained_window_sizes=8)
    return swinv2_jax.create_model(trained['name'], **TRANSFER, **TARGETS[key], position_bias=trained['mode'],
                                   **pretrained)


@pytest.mark.parametrize('key', list(TARGETS))
def test_window_transfer_through_orbax_init_from_and_torch(trained_w8, key, caplog):
    target = _target(trained_w8, key)
    with caplog.at_level(logging.INFO):
        model, variables = checkpoints.load_converted(trained_w8['dir'], model=target)
    assert model is target
    src = flat(trained_w8['variables']['params'])
    got = flat(variables['params'])
    assert got.keys() == src.keys()
    resized = [p for p in got if p[-1] == 'relative_position_bias_table']
    for p, v in got.items():
        if p in resized:
            side = 2 * target.stage_windows()[int(p[0].split('_')[1])][0][0] - 1
            ref = official_table_resize(torch.tensor(np.asarray(src[p])), side).numpy()
            np.testing.assert_allclose(np.asarray(v), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        else:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(src[p]), err_msg='/'.join(p))
    assert bool(resized) == (trained_w8['mode'] == 'table')
    assert ('resized the position bias table' in caplog.text) == bool(resized)
    assert ('continuous position bias carried over unchanged' in caplog.text) == (not resized)
    if key == 'w16_256' or trained_w8['mode'] == 'linear_cpb':  # (24 for the others: against timm below)
        logits = logits_of(target, variables, images(target.img_size))
        assert np.isfinite(logits).all() and np.abs(logits).max() > 0

    # the training init_from (converted directory) and the PyTorch route give the same parameters
    init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_variables(target)['params'])
    params, report = init_from.load_pretrained(str(trained_w8['dir']), target, init)
    assert_same_params({'params': params}, variables)
    assert bool(report.resized) == bool(resized) and not report.reinitialised
    sd = swinv2_jax.export_torch_weights(trained_w8['variables'], trained_w8['model'], 'timm')
    assert_same_params(swinv2_jax.load_torch_weights(sd, target), variables)


@pytest.mark.parametrize('mode', ['log_cpb', 'table'])
def test_window_24_transfer_matches_timm(mode):
    """Window 8 -> 24 at 384 against timm: SwinV2 with pretrained_window_sizes=8 (nothing resized);
    Swin V1 with its tables resized by the official recipe (torch bicubic) before timm loads them."""
    name = V1 if mode == 'table' else V2
    source = swinv2_jax.create_model(name, **TRANSFER, **SOURCE)
    sd = swinv2_jax.export_torch_weights(randomised_params(source, seed=5), source, 'timm')
    kw = {} if mode == 'table' else dict(pretrained_window_sizes=(8, 8, 8, 8))
    target = swinv2_jax.create_model(name, **TRANSFER, **TARGETS['w24_384'], **kw)
    ref = timm_model(name, **TRANSFER, **TARGETS['w24_384'], **kw)
    ref_sd = to_torch_state(sd)
    for k, v in ref_sd.items():
        if k.endswith('relative_position_bias_table'):  # layers.{i}.blocks.{j}.attn.relative_...
            window = target.stage_windows()[int(k.split('.')[1])][0]
            ref_sd[k] = official_table_resize(v, 2 * window[0] - 1)
    ref.load_state_dict(ref_sd, strict=True)
    x = images((384, 384))
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    assert_close(logits_of(target, swinv2_jax.load_torch_weights(sd, target), x), ref_logits, 1e-4)


# ----------------------------------------------------------------------------------------------
# 5. Config round trip
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name,overrides', [
    (V1, {}),
    (V1, dict(strict_img_size=False, norm_placement='res_post')),
    (V2, dict(position_bias='linear_cpb', attention='dot', qkv_bias='qkv', patch_merging='v1',
              strict_img_size=False)),
])
def test_config_round_trip(name, overrides):
    model = swinv2_jax.create_model(name, **overrides)
    fields = json.loads(json.dumps(swinv2_jax.model_fields(model)))
    for k in (*SWITCHES, 'strict_img_size'):
        assert k in fields
    again = swinv2_jax.model_from_fields(fields)
    assert swinv2_jax.model_fields(again) == swinv2_jax.model_fields(model)
    assert again.is_swin_v1 == (name == V1 and not overrides.get('norm_placement'))
    if name == V1 and not overrides:
        assert {k: fields[k] for k in SWIN_V1} == SWIN_V1


def test_no_weight_decay_on_the_v1_table():
    """As the official V1 recipe (`no_weight_decay_keywords`) and timm: the table is not decayed."""
    from swinv2_jax.train.optim import decay_mask
    mask = flat(decay_mask(abstract_variables(swinv2_jax.create_model(V1, **SMALL_V1))['params']))
    tables = [v for p, v in mask.items() if p[-1] == 'relative_position_bias_table']
    assert len(tables) == sum(SMALL_V1['depths']) and not any(tables)
    assert mask[('layers_0', 'blocks_0', 'attn', 'qkv', 'kernel')]


@pytest.mark.parametrize('row', ['table1_parameterized', 'table6_res_post_norm'])
def test_ablation_training_config(row):
    """configs/imagenet1k_ablation.py:ROW builds the row's model; the switches are config keys."""
    import importlib
    from swinv2_jax.train import config_lib
    recipe = importlib.import_module('configs.imagenet1k_ablation')
    c = recipe.get_config(f'{row},runlocal')
    overrides = config_lib.as_overrides(c)
    assert set(SWITCHES) <= set(overrides)
    model = swinv2_jax.create_model(c.model, **overrides)
    for k, v in ABLATIONS[row].items():
        assert getattr(model, k) == v
    assert model.qkv_bias == ('qkv' if row.startswith('table6') else 'qv')
    abstract_variables(model)
    with pytest.raises(ValueError, match='choose one of'):
        recipe.get_config('table99')


def test_cli_converts_swin_v1_to_another_window(tmp_path, capsys, caplog):
    """The command line: a window-8 Swin V1 .safetensors into a window-16 model, tables resized."""
    from safetensors.numpy import save_file
    from swinv2_jax import convert
    source = swinv2_jax.create_model(V1, **TRANSFER, **SOURCE)
    variables = randomised_params(source, seed=6)
    src = tmp_path / 'w8.safetensors'
    save_file(swinv2_jax.export_torch_weights(variables, source, 'official'), str(src))
    args = [str(src), '--model', V1, '--out', str(tmp_path / 'w16'), '--img-size', '256', '--window-size', '16']
    for k in ('embed_dim', 'depths', 'num_heads', 'num_classes'):
        args += ['--override', f'{k}={TRANSFER[k]!r}']
    with caplog.at_level(logging.INFO):
        assert convert.main(args) == 0
    assert 'official-layout' in capsys.readouterr().out
    assert 'from window 8x8 (15x15 offsets) to 16x16 (31x31)' in caplog.text
    model, loaded = checkpoints.load_converted(tmp_path / 'w16')
    assert model.window_size[0] == (16, 16)
    table = flat(loaded['params'])[('layers_0', 'blocks_0', 'attn', 'relative_position_bias_table')]
    assert table.shape == (31 * 31, 1)


def test_memory_switches_change_no_numbers_with_v1_and_padding(small_v1):
    """Sequential attention (chunks of the padded map's windows) and remat on a Swin V1 at a padded
    size: the same logits."""
    model = small_v1['model'].clone(strict_img_size=False)
    x = images((132, 92))
    plain = logits_of(model, small_v1['variables'], x)
    chunked = model.clone(sequential_attention=(0, 1, 2, 3), attention_chunk_size=3, remat_policy='full')
    np.testing.assert_allclose(logits_of(chunked, small_v1['variables'], x), plain, rtol=0,
                               atol=1e-5 * np.abs(plain).max())


def test_cpb_transfer_notes_flag_unset_pretrained_windows():
    source = swinv2_jax.create_model(V2, **TRANSFER, **SOURCE)
    with_pw = swinv2_jax.create_model(V2, **TRANSFER, **TARGETS['w16_256'], pretrained_window_sizes=8)
    without = swinv2_jax.create_model(V2, **TRANSFER, **TARGETS['w16_256'])
    assert len(transfer.cpb_transfer_notes(source, with_pw)) == 1
    notes = transfer.cpb_transfer_notes(source, without)
    assert len(notes) == 2 and 'pretrained_window_sizes=[8, 8, 8, 8]' in notes[1]
    assert transfer.cpb_transfer_notes(source, source) == []
