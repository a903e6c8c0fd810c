"""from_pretrained on Hugging Face UperNet folders (a Swinv2Backbone and a SwinBackbone, random
weights, saved by transformers' own save_pretrained) and `python -m swinv2_jax.predict` writing
their masks: the logits are Hugging Face's, the mask PNGs the argmax at each image's own size."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('transformers')
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from swinv2_jax import from_pretrained, images, predict  # noqa: E402
from torch_refs import assert_close, nchw, randomize_, randomize_bn_  # noqa: E402

LABELS = ['wall', 'sky', 'tree', 'road', 'person']
SIZE = 64
CASES = {  # backbone config class, window: V1 with 5 pads every stage map (16, 8, 4, 2)
    'swinv2': ('Swinv2Config', 4),
    'swin': ('SwinConfig', 5),
}


@pytest.fixture(scope='module', params=list(CASES))
def hub(request, tmp_path_factory):
    import transformers
    from transformers import UperNetConfig, UperNetForSemanticSegmentation
    config_class, window = CASES[request.param]
    backbone = getattr(transformers, config_class)(
        image_size=SIZE, patch_size=4, embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=window,
        layer_norm_eps=1e-5, out_features=['stage1', 'stage2', 'stage3', 'stage4'])
    config = UperNetConfig(backbone_config=backbone, hidden_size=32, auxiliary_channels=16, pool_scales=[1, 2, 3, 6],
                           num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                           label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(7)
    ref = randomize_bn_(randomize_(UperNetForSemanticSegmentation(config), seed=7), 7).eval()
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    # SegformerImageProcessor's form, as the hub's UperNets ship it
    (folder / 'preprocessor_config.json').write_text(json.dumps({
        'image_processor_type': 'SegformerImageProcessor', 'do_resize': True, 'size': {'height': SIZE, 'width': SIZE},
        'resample': 2, 'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
        'image_mean': [0.485, 0.456, 0.406], 'image_std': [0.229, 0.224, 0.225], 'do_reduce_labels': False}))
    return folder, ref


def test_logits_and_info_match_hugging_face(hub):
    folder, ref = hub
    model, variables, info = from_pretrained(folder)
    assert info.task == 'segmentation' and info.source == 'transformers'
    assert info.labels == tuple(LABELS)
    assert info.input_size == (SIZE, SIZE) and info.crop_mode == 'squash' and info.interpolation == 'bilinear'
    assert model.aux_channels == 16 and model.head_channels == 32
    x = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(pixel_values=nchw(x)).logits.numpy().transpose(0, 2, 3, 1)
    assert_close(model.apply(variables, jnp.asarray(x)), expected, 1e-4)


def test_predict_writes_masks_of_the_original_sizes(hub, tmp_path, capsys):
    folder, _ = hub
    sizes = [(50, 37), (23, 90)]   # (height, width)
    rng = np.random.default_rng(1)
    files = []
    for i, (h, w) in enumerate(sizes):
        files.append(str(tmp_path / f'img{i}.png'))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    out = tmp_path / 'masks'
    assert predict.main([str(folder), *files, '--out', str(out), '--json', '--batch-size', '2']) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, variables, info = from_pretrained(folder)
    batch = np.stack([images.eval_transform(images.load_image(f), info) for f in files])
    argmax = np.asarray(model.apply(variables, jnp.asarray(batch)).argmax(-1))
    for record, file, (h, w), am in zip(records, files, sizes, argmax):
        assert record['file'] == file
        with Image.open(record['mask']) as png:
            assert png.mode == 'P' and png.size == (w, h)
            mask = np.asarray(png)
        want = F.interpolate(torch.from_numpy(am[None, None].astype(np.float32)), size=(h, w),
                             mode='nearest-exact')[0, 0].numpy().astype(np.int64)
        np.testing.assert_array_equal(mask, want)
        assert record['classes'] == [LABELS[i] for i in np.unique(want)]


def test_predict_without_out_errors(hub, tmp_path, capsys):
    folder, _ = hub
    file = str(tmp_path / 'a.png')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(file)
    assert predict.main([str(folder), file]) == 2
    assert '--out DIR' in capsys.readouterr().err


@pytest.mark.usefixtures('compilation_cache')   # tests/conftest.py
def test_a_segmentation_training_run_loads_with_its_batch_norm_statistics(tmp_path):
    """A train.py workdir of the segmentation objective: its params and BatchNorm statistics as
    the run left them (an untrained set would give other logits), a squash to the model's size."""
    import importlib
    import os

    import jax
    from swinv2_jax.train import trainer
    c = importlib.import_module('configs.digits_segmentation').get_config('runlocal')
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 1, 0, 1
    state = trainer.train_and_evaluate(c, str(tmp_path))
    model, variables, info = from_pretrained(tmp_path)
    assert info.task == 'segmentation' and info.source == 'training' and info.crop_mode == 'squash'
    assert info.input_size == tuple(model.img_size)
    for a, b in zip(jax.tree.leaves((state.params, state.batch_stats)),
                    jax.tree.leaves((variables['params'], variables['batch_stats']))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_upernet_on_another_backbone_is_a_clear_error(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps({
        'model_type': 'upernet', 'backbone_config': {'model_type': 'convnext', 'depths': [1, 1, 1, 1]}}))
    with pytest.raises(ValueError, match=r"UperNet on a 'convnext' backbone.*swinv2, swin"):
        from_pretrained(tmp_path)
