"""UperNet (swinv2_jax/models/upernet.py, swinv2_jax/weights/upernet.py): PyTorch's resampling
exactly, parity with Hugging Face's `UperNetForSemanticSegmentation` on a Swinv2Backbone and a
SwinBackbone (random weights, norms and BatchNorm statistics randomised), the mmsegmentation
layout, strict export, training-mode BatchNorm over a sharded global batch, and the errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402

import swinv2_jax  # noqa: E402
from swinv2_jax.models.upernet import adaptive_avg_pool, resize_bilinear  # noqa: E402
from swinv2_jax.weights import upernet as upernet_weights  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
from torch_refs import assert_close, nchw, randomize_, randomize_bn_, to_torch_state  # noqa: E402

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
HEAD = dict(num_classes=5, head_channels=32, aux_channels=16)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *size, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# 1. Resampling against torch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('src, dst', [((5, 7), (20, 28)), ((7, 5), (13, 11)), ((13, 11), (5, 7)),
                                      ((20, 17), (9, 30)), ((3, 3), (3, 3)), ((1, 4), (6, 6))])
def test_resize_bilinear_matches_torch(src, dst):
    x = np.random.default_rng(1).standard_normal((2, *src, 3)).astype(np.float32)
    ref = F.interpolate(nchw(x), size=dst, mode='bilinear', align_corners=False)
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), dst)), nhwc(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('size', [(20, 20), (7, 11), (5, 5), (2, 3), (13, 17)])
@pytest.mark.parametrize('scale', [1, 2, 3, 6])
def test_adaptive_avg_pool_matches_torch(size, scale):
    """Bins overlap where the scale does not divide the size, and repeat where it exceeds it."""
    x = np.random.default_rng(2).standard_normal((2, *size, 4)).astype(np.float32)
    ref = F.adaptive_avg_pool2d(nchw(x), scale)
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool(jnp.asarray(x), scale)), nhwc(ref),
                               rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 2. Parity with Hugging Face
# ----------------------------------------------------------------------------------------------

def hf_upernet(model: swinv2_jax.UperNet, seed: int):
    from transformers import SwinConfig, Swinv2Config, UperNetConfig, UperNetForSemanticSegmentation
    b = model.backbone
    common = dict(image_size=b.img_size[0], patch_size=b.patch_size, embed_dim=b.embed_dim, depths=list(b.depths),
                  num_heads=list(b.num_heads), window_size=b.window_size[0][0], drop_path_rate=0.0,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5,
                  out_features=['stage1', 'stage2', 'stage3', 'stage4'])
    backbone = SwinConfig(**common) if b.is_swin_v1 else Swinv2Config(**common)
    config = UperNetConfig(backbone_config=backbone, hidden_size=model.head_channels, num_labels=model.num_classes,
                           auxiliary_channels=model.aux_channels, use_auxiliary_head=bool(model.aux_channels),
                           pool_scales=list(model.pool_scales))
    torch.manual_seed(seed)
    return randomize_bn_(randomize_(UperNetForSemanticSegmentation(config), seed=seed), seed).eval()


def hf_logits(ref, x):
    with torch.no_grad():
        out = ref(pixel_values=nchw(x))
        aux = ref.auxiliary_head(ref.backbone(nchw(x)).feature_maps)
        aux = F.interpolate(aux, size=x.shape[1:3], mode='bilinear', align_corners=False)
    return nhwc(out.logits), nhwc(aux)


@pytest.fixture(scope='module')
def v2():
    model = swinv2_jax.create_model('upernet_swinv2_tiny_window8_256', **TINY, **HEAD, img_size=64, window_size=4,
                                    out_norms=False)
    ref = hf_upernet(model, seed=3)
    x = images((64, 64))
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    return dict(model=model, ref=ref, x=x, variables=variables, ref_logits=hf_logits(ref, x))


@pytest.fixture(scope='module')
def v1():
    # 128 / window 2: every stage map (32, 16, 8, 4) is larger than the window, which Hugging Face's
    # SwinBackbone never clips (always_partition) and this backbone clips at <= window.
    model = swinv2_jax.create_model('upernet_swin_tiny_patch4_window7_224', **TINY, **HEAD, img_size=128,
                                    window_size=2)
    ref = hf_upernet(model, seed=4)
    x = images((128, 128), seed=1)
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    return dict(model=model, ref=ref, x=x, variables=variables, ref_logits=hf_logits(ref, x))


@pytest.mark.parametrize('name, kw, size', [
    # Swinv2Backbone pads before the cyclic shift and clips windows: window_padding='hf'. 96 / window
    # 5: maps of 24, 12, 6 padded, 3 clipped. (Not odd maps: Hugging Face sizes its stages by floor,
    # not by the merged map's ceil, and clips their windows by that.)
    ('upernet_swinv2_tiny_window8_256', dict(window_size=5, out_norms=False, window_padding='hf'), 96),
    # SwinBackbone pads before the shift and never clips (always_partition), as mmsegmentation:
    # window_padding='mmseg'. 64 / window 5: maps of 16, 8, 4, 2, every one padded, two smaller than it
    ('upernet_swin_tiny_patch4_window7_224', dict(window_size=5, window_padding='mmseg'), 64),
])
def test_matches_hugging_face_on_padded_maps(name, kw, size):
    model = swinv2_jax.create_model(name, **TINY, **HEAD, img_size=size, strict_img_size=False, **kw)
    ref = hf_upernet(model, seed=5)
    x = images((size, size), seed=2)
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    assert_close(model.apply(variables, jnp.asarray(x)), hf_logits(ref, x)[0], 1e-4)
    if model.backbone.is_swin_v1:
        return  # (its tables are sized for unclipped windows: no other mode loads them)
    # timm's order (shift, then pad) is another computation on these maps: the test can fail
    timm_order = model.clone(backbone=model.backbone.clone(window_padding='timm'))
    with pytest.raises(AssertionError):
        assert_close(timm_order.apply(variables, jnp.asarray(x)), hf_logits(ref, x)[0], 1e-4)


@pytest.mark.parametrize('case', ['v2', 'v1'])
def test_matches_hugging_face(case, request):
    c = request.getfixturevalue(case)
    logits = c['model'].apply(c['variables'], jnp.asarray(c['x']))
    assert logits.shape == (2, *c['x'].shape[1:3], 5)
    assert_close(logits, c['ref_logits'][0], 1e-4)
    aux = swinv2_jax.models.upernet.auxiliary_logits(c['model'], c['variables'], jnp.asarray(c['x']))
    assert_close(aux, c['ref_logits'][1], 1e-4, what='auxiliary logits')


def test_training_mode_batch_norm_matches_torch(v2):
    """Training mode: batch statistics (biased variance) normalise, the running statistics move by
    momentum 0.1 with the unbiased variance, as torch's BatchNorm2d (a copy of the reference in
    train mode, dropout off)."""
    import copy
    model = v2['model'].clone(dropout=0.0, backbone=v2['model'].backbone.clone(drop_path_rate=0.0))
    ref = copy.deepcopy(v2['ref']).train()
    x = v2['x']
    with torch.no_grad():
        ref_logits = ref(pixel_values=nchw(x)).logits
    (logits, aux), new = model.apply(v2['variables'], jnp.asarray(x), train=True, mutable=['batch_stats'])
    assert_close(logits, nhwc(ref_logits), 1e-4, what='training-mode logits')
    stats = upernet_weights.export_torch_weights({**v2['variables'], **new}, model, 'hf')
    sd = ref.state_dict()
    for k in ('decode_head.fpn_bottleneck.batch_norm.running_var', 'decode_head.psp_modules.3.1.batch_norm.running_mean',
              'auxiliary_head.convs.0.batch_norm.running_var'):
        np.testing.assert_allclose(stats[k], sd[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


def test_hf_export_loads_strictly_v2(v2):
    """Swinv2Backbone: our export is the model's own state dict, strict; the same logits back."""
    from transformers import UperNetForSemanticSegmentation
    sd = swinv2_jax.export_torch_weights(v2['variables'], v2['model'], 'hf')
    fresh = UperNetForSemanticSegmentation(v2['ref'].config).eval()
    fresh.load_state_dict(to_torch_state(sd), strict=True)
    assert_close(hf_logits(fresh, v2['x'])[0], v2['ref_logits'][0], 1e-6)


def test_hf_export_loads_from_pretrained_v1(v1, tmp_path):
    """SwinBackbone: the export has the hub files' names; transformers' from_pretrained (renaming
    them in memory) finds nothing missing, unexpected or mis-shaped but the backbone's unused final
    norm, and gives our logits; its in-memory names read back to the same variables."""
    from safetensors.numpy import save_file
    from transformers import UperNetForSemanticSegmentation
    sd = swinv2_jax.export_torch_weights(v1['variables'], v1['model'], 'hf')
    assert 'backbone.encoder.layers.0.blocks.0.attention.self.query.weight' in sd
    assert 'backbone.hidden_states_norms.stage4.weight' in sd
    v1['ref'].config.save_pretrained(tmp_path)
    save_file({k: np.array(v) for k, v in sd.items()}, str(tmp_path / 'model.safetensors'),
              metadata={'format': 'pt'})
    hf, info = UperNetForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert all(k.startswith('backbone.swin.layernorm') for k in info['missing_keys']), info
    assert not info['unexpected_keys'] and not info['mismatched_keys'], info
    assert_close(hf_logits(hf.eval(), v1['x'])[0], v1['ref_logits'][0], 1e-4)


def test_mmseg_layout(v1):
    """mmsegmentation's names (official Swin backbone, norm{i}, bn, conv_seg), built from the
    Hugging Face state dict by the renaming transformers' own converter undoes, load to the same
    variables; our mmseg export is that state dict (plus the index buffers)."""
    hf_sd = {k: v.numpy() for k, v in v1['ref'].state_dict().items()}
    official = swinv2_jax.export_torch_weights({'params': v1['variables']['params']['backbone']},
                                               v1['model'].backbone, 'official')
    mm = {'backbone.' + k: v for k, v in official.items() if not k.endswith('attn_mask')}
    for k, v in hf_sd.items():
        if k.startswith(('decode_head.', 'auxiliary_head.')):
            mm[k.replace('.batch_norm.', '.bn.').replace('.classifier.', '.conv_seg.')] = v
        elif k.startswith('backbone.hidden_states_norms.stage'):
            i = int(k[len('backbone.hidden_states_norms.stage')]) - 1
            mm[f'backbone.norm{i}.' + k.rsplit('.', 1)[1]] = v
    assert upernet_weights.detect_layout(mm) == 'mmseg'
    loaded = swinv2_jax.load_torch_weights(mm, v1['model'])
    jax.tree.map(np.testing.assert_array_equal, loaded, v1['variables'])
    exported = swinv2_jax.export_torch_weights(loaded, v1['model'], 'mmseg')
    assert set(exported) == {k for k in mm if not k.endswith('num_batches_tracked')}
    for k, v in exported.items():
        np.testing.assert_array_equal(v, mm[k], err_msg=k)


def test_converted_round_trip(v2, tmp_path):
    model, variables = swinv2_jax.load_converted(
        swinv2_jax.save_converted(tmp_path / 'seg', v2['variables'], v2['model'], model_name='upernet_test'))
    assert model == v2['model']
    jax.tree.map(np.testing.assert_array_equal, variables, jax.tree.map(np.asarray, v2['variables']))


# ----------------------------------------------------------------------------------------------
# 3. Training-mode BatchNorm over a sharded global batch (SyncBN), on 8 fake CPU devices
# ----------------------------------------------------------------------------------------------

SHARDED_BN = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import swinv2_jax
from swinv2_jax.train import sharding
assert jax.device_count() == 8, jax.devices()
model = swinv2_jax.create_model('upernet_swinv2_tiny_window8_256', embed_dim=16, depths=(1, 1, 2, 1),
                                num_heads=(1, 2, 2, 4), img_size=32, window_size=2, num_classes=5,
                                head_channels=16, aux_channels=8, dropout=0.0, drop_path_rate=0.0)
x = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype(np.float32)
x[:8] += 3.0   # the devices' shards differ: per-device statistics would not be the global ones
variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
def step(v, x):
    (logits, aux), new = model.apply(v, x, train=True, mutable=['batch_stats'])
    return logits, aux, new['batch_stats']
mesh = sharding.make_mesh()
xs = jax.device_put(x, NamedSharding(mesh, P(sharding.DATA_AXIS)))
vs = jax.device_put(variables, NamedSharding(mesh, P()))
with jax.set_mesh(mesh):
    sharded = jax.jit(step)(vs, xs)
single = jax.jit(step)(jax.device_put(variables, jax.devices()[0]), jax.device_put(x, jax.devices()[0]))
local = step(variables, x[:2])      # one device's shard alone: what per-device BN would see
err = lambda a, b: max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))) / (np.max(np.abs(np.asarray(q))) + 1e-12))
                       for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
print(json.dumps(dict(sharded_vs_single=err(sharded, single),
                      local_vs_global_stats=err(local[2], single[2]),
                      shards=len(sharded[0].sharding.device_set))))
'''


def test_training_batch_norm_uses_the_global_batch_when_sharded():
    from test_sharding import env_with_devices
    out = subprocess.run([sys.executable, '-c', SHARDED_BN], env={**env_with_devices(8), 'PYTHONPATH': REPO},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['shards'] == 8
    assert result['sharded_vs_single'] < 1e-5, result
    assert result['local_vs_global_stats'] > 1e-2, result   # the comparison can tell them apart


# ----------------------------------------------------------------------------------------------
# 4. Registry and errors
# ----------------------------------------------------------------------------------------------

def test_registry_names_aliases_and_fields():
    m = swinv2_jax.create_model('upernet_swinv2_base_window16_256')
    assert isinstance(m, swinv2_jax.UperNet) and m.num_classes == 150 and m.head_channels == 512
    assert m.pool_scales == (1, 2, 3, 6) and m.aux_channels == 256 and m.backbone.num_classes == 0
    assert m.backbone.embed_dim == 128 and m.backbone.window_size[0] == (16, 16)
    hub = swinv2_jax.create_model('openmmlab/upernet-swin-base')
    assert hub.backbone.is_swin_v1 and hub.backbone.window_size[0] == (12, 12) and hub.out_norms
    assert hub.backbone.img_size == (512, 512) and hub.backbone.embed_dim == 128
    assert swinv2_jax.create_model('openmmlab/upernet-swin-tiny').backbone.window_size[0] == (7, 7)
    # any backbone override, and the head's
    m = swinv2_jax.create_model('upernet_swinv2_large_window12to24_192to384', img_size=640, window_size=40,
                                pretrained_window_sizes=(12, 12, 12, 6), aux_channels=0, num_classes=19)
    assert m.backbone.window_size[0] == (40, 40) and m.backbone.pretrained_window_sizes[3] == (6, 6)
    assert m.aux_channels == 0 and m.num_classes == 19
    assert swinv2_jax.model_from_fields(json.loads(json.dumps(swinv2_jax.model_fields(m)))) == m
    assert 'upernet_swinv2_tiny_window8_256' in swinv2_jax.list_segmentation_models()
    assert not any(n.startswith('upernet') for n in swinv2_jax.list_models())


@pytest.mark.parametrize('name, kw, match', [
    ('upernet_swinv2_tinny_window8_256', {}, 'unknown model'),
    ('upernet_swinv2_tiny_window8_256', dict(head_chanels=64), 'unknown override.*head_chanels'),
    ('upernet_swinv2_tiny_window8_256', dict(depths=(2, 2, 6), num_heads=(3, 6, 12)), 'has 3 stages.*four'),
    ('upernet_swinv2_digits_window4_32', {}, 'has 2 stages'),
    ('upernet_swinv2_tiny_window8_256', dict(pool_scales=(1, 0)), 'pool_scales must be positive'),
    ('upernet_swinv2_tiny_window8_256', dict(aux_channels=-1), 'aux_channels'),
    ('upernet_swinv2_tiny_window8_256', dict(img_size=250), 'the backbone.*img_size'),
    ('openmmlab/upernet-swin-huge', {}, 'unknown model'),
])
def test_bad_names_and_overrides(name, kw, match):
    with pytest.raises(ValueError, match=match):
        swinv2_jax.create_model(name, **kw)


def test_checkpoint_errors(v2, v1):
    sd = {k: v.numpy() for k, v in v2['ref'].state_dict().items()}
    other = v2['model'].clone(num_classes=7)
    with pytest.raises(ValueError, match=r'(?s)classifier.*5 classes.*num_classes=5.*reinit_classifiers'):
        swinv2_jax.load_torch_weights(sd, other)
    with pytest.raises(ValueError, match='no output norms.*out_norms=False'):
        swinv2_jax.load_torch_weights(sd, v2['model'].clone(out_norms=True))
    with pytest.raises(ValueError, match='aux_channels=0'):
        swinv2_jax.load_torch_weights({k: v for k, v in sd.items() if not k.startswith('auxiliary_head')},
                                      v2['model'])
    with pytest.raises(ValueError, match="Swinv2Backbone has no output norms"):
        swinv2_jax.export_torch_weights(v2['variables'], v2['model'].clone(out_norms=True), 'hf')
    with pytest.raises(ValueError, match='cannot tell the layout'):
        swinv2_jax.load_torch_weights({'backbone.x': np.zeros(1)}, v2['model'])
    # a model without the auxiliary head drops the checkpoint's
    no_aux = v2['model'].clone(aux_channels=0)
    assert 'auxiliary_head' not in swinv2_jax.load_torch_weights(sd, no_aux)['params']


def test_reinit_classifiers(v2):
    """A 5-class checkpoint starts a 7-class fine-tune: everything but the classifiers carried over."""
    other = v2['model'].clone(num_classes=7)
    new = upernet_weights.reinit_classifiers(v2['variables'], other, jax.random.PRNGKey(0))
    assert new['params']['decode_head']['classifier']['kernel'].shape[-1] == 7
    assert new['params']['auxiliary_head']['classifier']['bias'].shape == (7,)
    np.testing.assert_array_equal(new['params']['decode_head']['bottleneck']['conv']['kernel'],
                                  v2['variables']['params']['decode_head']['bottleneck']['conv']['kernel'])
    assert other.apply(new, jnp.asarray(v2['x'])).shape == (2, 64, 64, 7)


def test_converted_into_another_window(v1, tmp_path):
    """A converted Swin V1 UperNet restored into a model at another window: its tables resized
    bicubically (as for the classifier), the head and its statistics as stored."""
    directory = swinv2_jax.save_converted(tmp_path / 'v1', v1['variables'], v1['model'])
    target = v1['model'].clone(backbone=v1['model'].backbone.clone(window_size=((4, 4),) * 4))
    model, variables = swinv2_jax.load_converted(directory, model=target)
    table = variables['params']['backbone']['layers_0']['blocks_0']['attn']['relative_position_bias_table']
    assert model is target and table.shape == (49, 1)
    jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'], jax.tree.map(np.asarray, v1['variables']['batch_stats']))
    from swinv2_jax.weights.tree_diff import diff_trees
    assert not diff_trees(swinv2_jax.models.abstract_variables(target), variables, check_dtype=True)


def test_mmseg_native_swin_names(v1):
    """mmsegmentation's own Swin (stages, w_msa, ffn, patch merging in nn.Unfold channel order), made
    from the official names by mmdetection's published converter (`swin_converter`), loads to the
    same variables."""
    def correct_unfold_reduction_order(x):
        out_channel, in_channel = x.shape
        x = x.reshape(out_channel, 4, in_channel // 4)
        return x[:, [0, 2, 1, 3], :].transpose(0, 2, 1).reshape(out_channel, in_channel)

    def correct_unfold_norm_order(x):
        in_channel = x.shape[0]
        x = x.reshape(4, in_channel // 4)
        return x[[0, 2, 1, 3], :].T.reshape(in_channel)

    mm = swinv2_jax.export_torch_weights(v1['variables'], v1['model'], 'mmseg')
    native = {}
    for k, v in mm.items():
        if k.startswith('backbone.layers.'):
            if '.attn.' in k:
                k = k.replace('attn.', 'attn.w_msa.')
            elif '.mlp.fc1.' in k:
                k = k.replace('mlp.fc1.', 'ffn.layers.0.0.')
            elif '.mlp.fc2.' in k:
                k = k.replace('mlp.fc2.', 'ffn.layers.1.')
            elif 'downsample.reduction.' in k:
                v = correct_unfold_reduction_order(v)
            elif 'downsample.norm.' in k:
                v = correct_unfold_norm_order(v)
            k = k.replace('layers', 'stages', 1)
        elif k.startswith('backbone.patch_embed.proj.'):
            k = k.replace('proj', 'projection')
        native[k] = v
    assert not np.array_equal(native['backbone.stages.0.downsample.reduction.weight'],
                              mm['backbone.layers.0.downsample.reduction.weight'])
    loaded = swinv2_jax.load_torch_weights(native, v1['model'])
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, v1['variables']))


def test_convert_command_line(v2, tmp_path):
    """python -m swinv2_jax.convert: a Hugging Face UperNet file -> a converted directory -> the
    mmseg and hf layouts back, with the same tensors."""
    from safetensors.numpy import load_file, save_file
    from swinv2_jax.weights import cli
    src = tmp_path / 'hf.safetensors'
    save_file({k: np.array(v) for k, v in swinv2_jax.export_torch_weights(v2['variables'], v2['model'], 'hf').items()},
              str(src))
    overrides = ['embed_dim=16', 'depths=(1,1,2,1)', 'num_heads=(1,2,2,4)', 'img_size=64', 'window_size=4',
                 'num_classes=5', 'head_channels=32', 'aux_channels=16', 'out_norms=False']
    argv = [str(src), '--model', 'upernet_swinv2_tiny_window8_256', '--out', str(tmp_path / 'ckpt')]
    assert cli.main(argv + [a for o in overrides for a in ('--override', o)]) == 0
    assert cli.main([str(tmp_path / 'ckpt'), '--to-torch', '--out', str(tmp_path / 'back.safetensors')]) == 0
    back, ref = load_file(str(tmp_path / 'back.safetensors')), load_file(str(src))
    assert back.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)
    assert cli.main([str(tmp_path / 'ckpt'), '--to-torch', '--layout', 'mmseg',
                     '--out', str(tmp_path / 'mm.safetensors')]) == 0
    assert 'decode_head.conv_seg.weight' in load_file(str(tmp_path / 'mm.safetensors'))
    with pytest.raises(SystemExit):   # a segmentation model has no timm layout: a usage error
        cli.main([str(tmp_path / 'ckpt'), '--to-torch', '--layout', 'timm', '--out', str(tmp_path / 'x.safetensors')])
