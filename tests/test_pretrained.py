"""from_pretrained on folders as transformers, timm and this project write them (random tiny models),
and the evaluation preprocessing against the references' own transforms."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
PIL = pytest.importorskip('PIL')
from PIL import Image  # noqa: E402

import swinv2_jax  # noqa: E402
from swinv2_jax import images  # noqa: E402
from swinv2_jax.pretrained import PretrainedInfo, from_pretrained  # noqa: E402
from torch_refs import assert_close, nchw, randomize_  # noqa: E402

LABELS = {0: 'cat', 1: 'dog', 2: 'emu'}
TINY = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4)


def hf_classifier(v1: bool = False, **changes):
    from transformers import (SwinConfig, SwinForImageClassification, Swinv2Config,
                              Swinv2ForImageClassification)
    cfg_cls, model_cls = (SwinConfig, SwinForImageClassification) if v1 else (Swinv2Config, Swinv2ForImageClassification)
    kw = dict(TINY, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    if not v1:
        kw['pretrained_window_sizes'] = [2, 0]
    kw.update(changes)
    torch.manual_seed(0)
    return randomize_(model_cls(cfg_cls(**kw)).eval())


def save_processor(folder, **kw):
    from transformers import ViTImageProcessor
    args = dict(size={'height': 32, 'width': 32}, resample=2, image_mean=[0.5, 0.4, 0.3],
                image_std=[0.2, 0.3, 0.4])
    args.update(kw)
    processor = ViTImageProcessor(**args)
    processor.save_pretrained(folder)
    return processor


def check_logits(model, variables, ref, size=32, rtol=1e-4):
    """Our logits against a Hugging Face classifier's on the same random inputs."""
    x = np.random.RandomState(1).randn(2, size, size, 3).astype(np.float32)
    with torch.no_grad():
        expected = ref(pixel_values=nchw(x)).logits.numpy()
    assert_close(np.asarray(model.apply(variables, x)), expected, rtol)


@pytest.mark.parametrize('v1', [False, True], ids=['swinv2', 'swin'])
def test_transformers_folder(tmp_path, v1):
    ref = hf_classifier(v1)
    ref.save_pretrained(tmp_path)
    save_processor(tmp_path)
    model, variables, info = from_pretrained(str(tmp_path))
    assert model.is_swin_v1 == v1 and model.num_classes == 3
    if not v1:
        assert [tuple(w) for w in model.pretrained_window_sizes] == [(2, 2), (0, 0)]
    check_logits(model, variables, ref)
    assert info == PretrainedInfo(labels=('cat', 'dog', 'emu'), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4),
                                  input_size=(32, 32), crop_pct=1.0, interpolation='bilinear',
                                  crop_mode='squash', source='transformers')


@pytest.mark.parametrize('files', ['sharded', 'bin'])
def test_transformers_sharded_and_pytorch_bin(tmp_path, files):
    ref = hf_classifier()
    if files == 'sharded':
        ref.save_pretrained(tmp_path, max_shard_size='40KB')
        shards = [f for f in os.listdir(tmp_path) if f.endswith('.safetensors')]
        assert 'model.safetensors.index.json' in os.listdir(tmp_path) and len(shards) > 1, shards
    else:  # older hub repositories: pytorch_model.bin only
        ref.config.save_pretrained(tmp_path)
        torch.save(ref.state_dict(), tmp_path / 'pytorch_model.bin')
    model, variables, info = from_pretrained(str(tmp_path))
    check_logits(model, variables, ref)
    assert info.labels == ('cat', 'dog', 'emu')
    assert info.crop_mode == 'squash' and info.input_size == (32, 32)   # no processor file: the hub's values


def test_transformers_placeholder_labels_and_a_truncated_shard(tmp_path):
    ref = hf_classifier(id2label=None, label2id=None, num_labels=3)
    ref.save_pretrained(tmp_path, max_shard_size='40KB')
    _, _, info = from_pretrained(str(tmp_path))
    assert info.labels is None                      # LABEL_0.. are transformers' placeholders
    shard = sorted(f for f in os.listdir(tmp_path) if f.endswith('.safetensors'))[-1]
    with open(tmp_path / shard, 'r+b') as f:
        f.truncate(100)
    with pytest.raises(ValueError, match='is the download complete'):
        from_pretrained(str(tmp_path))


def test_transformers_config_that_cannot_be_represented(tmp_path):
    ref = hf_classifier()
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / 'config.json').read_text())
    (tmp_path / 'config.json').write_text(json.dumps({**cfg, 'use_absolute_embeddings': True,
                                                      'hidden_act': 'relu'}))
    with pytest.raises(ValueError, match='use_absolute_embeddings.*hidden_act|hidden_act.*use_absolute'):
        from_pretrained(str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({**cfg, 'model_type': 'vit'}))
    with pytest.raises(ValueError, match="type 'vit'"):
        from_pretrained(str(tmp_path))


def test_timm_folder_written_by_save_for_hf(tmp_path):
    import timm
    from timm.models._hub import save_for_hf
    ref = timm.create_model('swinv2_tiny_window8_256', pretrained=False, img_size=32, embed_dim=16,
                            depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=3,
                            pretrained_window_sizes=(2, 0))
    randomize_(ref.eval())
    save_for_hf(ref, tmp_path, model_config=dict(label_names=['ant', 'bee', 'cow']), safe_serialization=True,
                data_config=dict(crop_pct=0.8, interpolation='bilinear', mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)))
    model, variables, info = from_pretrained(str(tmp_path))
    assert [tuple(w) for w in model.pretrained_window_sizes] == [(2, 2), (0, 0)]
    x = np.random.RandomState(1).randn(2, 32, 32, 3).astype(np.float32)
    with torch.no_grad():
        expected = ref(nchw(x)).numpy()
    assert_close(np.asarray(model.apply(variables, x)), expected, 1e-4)
    assert info.labels == ('ant', 'bee', 'cow') and info.source == 'timm'
    assert (info.crop_pct, info.interpolation, info.crop_mode) == (0.8, 'bilinear', 'center')
    assert np.allclose(info.mean, (0.1, 0.2, 0.3)) and np.allclose(info.std, (0.4, 0.5, 0.6))

    # the preprocessing is timm's own evaluation transform, pixel for pixel
    from timm.data import create_transform, resolve_data_config
    transform = create_transform(**resolve_data_config(model=ref, pretrained_cfg=json.loads(
        (tmp_path / 'config.json').read_text())['pretrained_cfg']))
    for hw in [(50, 37), (37, 61), (32, 32)]:
        image = Image.fromarray(np.random.RandomState(hw[0]).randint(0, 256, (*hw, 3), np.uint8))
        np.testing.assert_allclose(images.eval_transform(image, info),
                                   transform(image).numpy().transpose(1, 2, 0), atol=1e-5)


def test_transformers_preprocessing_matches_its_image_processor(tmp_path):
    """Pixel for pixel against the Pillow processor (transformers < 5's only one; >= 5 defaults to a
    torchvision backend whose bicubic differs from Pillow's by a few levels on some pixels)."""
    hf_classifier().save_pretrained(tmp_path)
    save_processor(tmp_path, resample=3)
    pil_processor = getattr(transformers, 'ViTImageProcessorPil', transformers.ViTImageProcessor)
    processor = pil_processor.from_pretrained(str(tmp_path))
    _, _, info = from_pretrained(str(tmp_path))
    for hw in [(50, 37), (70, 90)]:
        image = Image.fromarray(np.random.RandomState(hw[1]).randint(0, 256, (*hw, 3), np.uint8))
        expected = processor(image, return_tensors='np')['pixel_values'][0].transpose(1, 2, 0)
        np.testing.assert_allclose(images.eval_transform(image, info), expected, atol=1e-5)


def test_converted_checkpoint(tmp_path):
    model = swinv2_jax.create_model('swinv2_tiny_window8_256', img_size=32, embed_dim=16, depths=(1, 1),
                                    num_heads=(1, 2), window_size=4, num_classes=4)
    import jax
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    swinv2_jax.save_converted(tmp_path / 'c', variables, model)
    loaded, loaded_vars, info = from_pretrained(str(tmp_path / 'c'))
    assert loaded == model
    x = np.random.RandomState(0).randn(1, 32, 32, 3).astype(np.float32)
    np.testing.assert_array_equal(loaded.apply(loaded_vars, x), model.apply(variables, x))
    assert info.labels is None and info.input_size == (32, 32) and info.crop_pct == 0.9
    assert info.source == 'converted'


def test_hub_names_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(FileNotFoundError, match='hf download microsoft/swinv2-tiny-patch4-window8-256'):
        from_pretrained('microsoft/swinv2-tiny-patch4-window8-256')
    # ... but one already in the local Hugging Face cache is read from there
    snapshot = tmp_path / 'cache' / 'models--someone--tiny' / 'snapshots' / 'abc123'
    ref = hf_classifier()
    ref.save_pretrained(snapshot)
    (tmp_path / 'cache' / 'models--someone--tiny' / 'refs').mkdir()
    (tmp_path / 'cache' / 'models--someone--tiny' / 'refs' / 'main').write_text('abc123')
    model, variables, info = from_pretrained('someone/tiny')
    check_logits(model, variables, ref)
    with pytest.raises(ValueError, match='none of'):
        from_pretrained(str(tmp_path / 'cache'))
    shutil.rmtree(tmp_path / 'cache')


def test_timm_preprocessing_this_package_does_not_implement(tmp_path):
    import timm
    from timm.models._hub import save_for_hf
    ref = timm.create_model('swinv2_tiny_window8_256', pretrained=False, img_size=32, embed_dim=16,
                            depths=(1, 1), num_heads=(1, 2), window_size=4, num_classes=3)
    save_for_hf(ref, tmp_path, safe_serialization=True, data_config=dict(crop_mode='border'))
    with pytest.raises(ValueError, match="crop_mode 'border'"):
        from_pretrained(str(tmp_path))
