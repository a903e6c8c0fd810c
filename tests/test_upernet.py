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
from torch_refs import assert_close, nchw, randomize_, to_torch_state  # noqa: E402

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

def randomize_bn_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """BatchNorm running statistics away from (0, 1), so that a wrong eps, a swapped mean/var or
    train-mode statistics in evaluation show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(0.5 * torch.randn(buf.shape, generator=g))
            elif name.endswith('running_var'):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    return module


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
