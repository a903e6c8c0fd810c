"""Segmentation training (objective 'segmentation'): metrics, sliding windows, the mask pipeline
(scene_parse150 under tfds.testing.mock_data, the folder format, the embedded digits scenes),
bad input, and end-to-end runs of the trainer (a resumed run equals an uninterrupted one)."""
from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swinv2_jax.models import upernet
from swinv2_jax.train import checkpointing, metrics, optim, trainer
from swinv2_jax.train.objectives import segmentation as seg_objective
from test_train import load_config

pytestmark = pytest.mark.usefixtures('compilation_cache')   # tests/conftest.py


# ----------------------------------------------------------------------------------------------
# Metrics: mmsegmentation's definitions on a confusion matrix computed by hand
# ----------------------------------------------------------------------------------------------

def test_confusion_and_mmseg_metrics_by_hand():
    label = jnp.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = jnp.array([[0, 1, 1, 1], [2, 0, 3, 3]])
    conf = np.asarray(seg_objective.confusion(pred, label, 4, 255))
    # rows = label, columns = prediction; the 255 pixel is not counted
    want = np.array([[1, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]], np.float64)
    np.testing.assert_array_equal(conf, want)
    m = seg_objective.mmseg_metrics(want)
    # IoU: class 0: 1 / (2 + 2 - 1); class 1: 2 / (3 + 3 - 2); class 2: 1 / (1 + 2 - 1); class 3: 0 / 1
    np.testing.assert_allclose(m['iou'], [1 / 3, 2 / 4, 1 / 2, 0.0])
    assert m['miou'] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2 + 0) / 4)
    # Acc over labelled classes only (class 3 has no label pixels: NaN, left out of mAcc)
    np.testing.assert_allclose(m['acc'][:3], [1 / 2, 2 / 3, 1 / 2])
    assert np.isnan(m['acc'][3])
    assert m['macc'] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m['aacc'] == pytest.approx(4 / 7)
    out = seg_objective.eval_metrics('eval', {'confusion': want, 'count': np.float32(2)})
    assert out['eval_miou'] == pytest.approx(m['miou']) and out['eval_examples'] == 2


def test_pixel_cross_entropy_ignores_and_averages_as_mmseg():
    logits = jnp.asarray(np.random.RandomState(0).randn(1, 2, 2, 3), jnp.float32)
    labels = jnp.array([[[0, 2], [255, 1]]])
    logp = jax.nn.log_softmax(logits, -1)
    nll = -(logp[0, 0, 0, 0] + logp[0, 0, 1, 2] + logp[0, 1, 1, 1])
    assert float(seg_objective.pixel_cross_entropy(logits, labels, 255)) == pytest.approx(float(nll) / 4, rel=1e-6)
    assert float(seg_objective.pixel_cross_entropy(logits, labels, 255, True)) == pytest.approx(float(nll) / 3,
                                                                                               rel=1e-6)


def test_linear_schedule_is_mmcv_poly_with_warmup():
    s = optim.make_poly_schedule(1.0, 1e-6, 0.0, 10, 100)
    assert float(s(0)) == pytest.approx(1e-6)
    assert float(s(5)) == pytest.approx((1 - 5 / 100) * (1 - 0.5 * (1 - 1e-6)), rel=1e-5)
    assert float(s(10)) == pytest.approx(0.9) and float(s(60)) == pytest.approx(0.4)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------------------------
# Sliding windows and the resize back to the original size
# ----------------------------------------------------------------------------------------------

def test_sliding_window_equals_whole_image_for_a_per_pixel_model():
    rng = np.random.RandomState(0)
    w = jnp.asarray(rng.randn(3, 5), jnp.float32)

    def fn(x):   # per pixel: any window gives each pixel the same logits
        return jnp.tanh(x @ w)

    images = jnp.asarray(rng.randn(3, 40, 48, 3), jnp.float32)
    sizes = jnp.array([[40, 48], [33, 21], [12, 9]])   # the last is smaller than the crop
    out = seg_objective.slide_logits(fn, images, sizes, (16, 16), (11, 11), 5)
    whole = fn(images)
    for b, (h, ww) in enumerate(np.asarray(sizes)):
        np.testing.assert_allclose(out[b, :h, :ww], whole[b, :h, :ww], rtol=1e-5, atol=1e-6)


def test_sliding_window_counts_overlaps_as_mmseg():
    """With fn = a constant per window position, the result is mmseg's average over the windows
    that cover each pixel: check it against a direct numpy implementation of slide_inference."""
    def fn(x):
        return jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True)[..., :1], (*x.shape[:3], 1))
    rng = np.random.RandomState(1)
    img = rng.rand(1, 30, 37, 3).astype(np.float32)
    out = seg_objective.slide_logits(fn, jnp.asarray(img), jnp.array([[30, 37]]), (16, 16), (10, 10), 1)
    preds, count = np.zeros((30, 37)), np.zeros((30, 37))
    for hi in range(max(30 - 16 + 9, 0) // 10 + 1):
        for wi in range(max(37 - 16 + 9, 0) // 10 + 1):
            y2, x2 = min(hi * 10 + 16, 30), min(wi * 10 + 16, 37)
            y1, x1 = max(y2 - 16, 0), max(x2 - 16, 0)
            preds[y1:y2, x1:x2] += img[0, y1:y2, x1:x2, 0].mean()
            count[y1:y2, x1:x2] += 1
    np.testing.assert_allclose(np.asarray(out[0, ..., 0]), preds / count, rtol=1e-5)


@pytest.mark.parametrize('size, orig', [((20, 30), (41, 57)), ((20, 30), (9, 14)), ((20, 30), (20, 30))])
def test_resize_to_original_is_pytorch_bilinear(size, orig):
    logits = jnp.asarray(np.random.RandomState(2).randn(24, 32, 4), jnp.float32)
    got = seg_objective.resize_to_original(logits, jnp.array(size), jnp.array(orig), (64, 64))
    want = upernet.resize_bilinear(logits[None, :size[0], :size[1]], orig)[0]
    np.testing.assert_allclose(got[:orig[0], :orig[1]], want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Data: digits scenes, the folder format, scene_parse150 under mock_data, bad input
# ----------------------------------------------------------------------------------------------

def test_digits_scenes_are_deterministic_and_disjoint():
    from swinv2_jax.data import digits_scenes
    images, masks = digits_scenes.scenes('test')
    assert images.shape == (300, 64, 64, 3) and masks.shape == (300, 64, 64)
    assert set(np.unique(masks)) == set(range(11))
    assert np.all(images[..., 0][masks > 0] >= digits_scenes.INK)     # labelled pixels are ink
    digits_scenes.scenes.cache_clear()
    again = digits_scenes.scenes('test')
    np.testing.assert_array_equal(again[1], masks)
    np.testing.assert_array_equal(again[0], images)
    # the fixed bytes of the held-out split (the docstring's "same bytes on every machine")
    assert hashlib.sha256(masks.tobytes() + images.tobytes()).hexdigest()[:16] == '83b99ae413cf023e'
    with pytest.raises(ValueError, match='splits train, test'):
        digits_scenes.scenes('validation')


def _folder_config(root, num_classes=4, crop=16):
    c = load_config('digits_segmentation', 'runlocal')
    c.dataset = f'folder:{root}'
    c.eval_split = 'val'
    c.seg.num_classes = num_classes
    c.seg.scale = (24, 16)
    c.seg.test_scale = (24, 16)
    c.seg.eval_canvas = (24, 24)
    c.seg.eval_label_canvas = (40, 40)
    c.batch_size = 2
    c.eval_batch_size = 2
    return c


def _write_folder(root, split, sizes, num_classes=4, mask_sizes=None, bad_value=None):
    import tensorflow as tf
    os.makedirs(os.path.join(root, split, 'images'), exist_ok=True)
    os.makedirs(os.path.join(root, split, 'masks'), exist_ok=True)
    rng = np.random.RandomState(len(sizes))
    for i, (h, w) in enumerate(sizes):
        img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        mh, mw = (mask_sizes or sizes)[i]
        mask = rng.randint(0, num_classes, (mh, mw, 1)).astype(np.uint8)
        mask[0, 0] = 255
        if bad_value is not None and i == 1:
            mask[1, 1] = bad_value
        tf.io.write_file(os.path.join(root, split, 'images', f'im{i}.png'), tf.io.encode_png(img))
        tf.io.write_file(os.path.join(root, split, 'masks', f'im{i}.png'), tf.io.encode_png(mask))


def test_folder_format_train_and_eval_batches(tmp_path):
    from swinv2_jax.data import segmentation as data
    root = str(tmp_path)
    _write_folder(root, 'train', [(30, 40), (20, 25), (10, 12), (40, 33)])
    _write_folder(root, 'val', [(30, 40), (14, 11), (25, 25)])
    c = _folder_config(root)
    info = data.dataset_info(c)
    assert info.num_classes == 4 and info.num_train_examples == 4 and info.num_eval_examples == {'val': 3}
    it = data.train_iterator(c, (16, 16), local_batch_size=2)
    batches = [next(it) for _ in range(3)]
    for b in batches:
        assert b['image'].shape == (2, 16, 16, 3) and b['label'].shape == (2, 16, 16)
        assert set(np.unique(b['label'])) <= {0, 1, 2, 3, 255}
    # resumption: the batch of step 2 from an iterator started at step 2
    again = next(data.train_iterator(c, (16, 16), local_batch_size=2, start_step=2))
    np.testing.assert_array_equal(again['label'], batches[2]['label'])
    np.testing.assert_array_equal(again['image'], batches[2]['image'])
    evals = list(data.eval_iterator(c, 'val', (16, 16), local_batch_size=2))
    assert len(evals) == 2 and evals[1]['mask'].tolist() == [1.0, 0.0]
    first = evals[0]
    assert first['image'].shape == (2, 24, 24, 3) and first['label'].shape == (2, 40, 40)
    # keep-ratio resize to (long 24, short 16): 30x40 -> 16x21 (int(40 * 16 / 30 + 0.5))
    assert first['size'][0].tolist() == [16, 21] and first['orig_size'][0].tolist() == [30, 40]
    assert np.all(first['label'][0, 30:] == 255) and np.all(first['label'][0, :, 40:] == 255)


@pytest.mark.parametrize('case, match', [
    ('size', r'the mask of .*im1.png.* is 9 x 12 pixels but its image is 10 x 12'),
    ('value', r'the mask of .*im1.png.* has the label value 7 outside \[0, 4\)'),
    ('missing', r'have no mask, e.g. .*masks/im0.png'),
])
def test_bad_masks_are_clear_errors_naming_the_file(tmp_path, case, match):
    from swinv2_jax.data import segmentation as data
    root = str(tmp_path)
    sizes = [(10, 12), (10, 12)]
    if case == 'size':
        _write_folder(root, 'train', sizes, mask_sizes=[(10, 12), (9, 12)])
    elif case == 'value':
        _write_folder(root, 'train', sizes, bad_value=7)
    else:
        _write_folder(root, 'train', sizes)
        os.remove(os.path.join(root, 'train', 'masks', 'im0.png'))
    c = _folder_config(root)
    with pytest.raises(ValueError, match=match):
        it = data.train_iterator(c, (16, 16), local_batch_size=2)
        next(it)


def test_folder_needs_num_classes(tmp_path):
    from swinv2_jax.data import segmentation as data
    _write_folder(str(tmp_path), 'train', [(10, 12)])
    c = _folder_config(str(tmp_path), num_classes=0)
    with pytest.raises(ValueError, match='set config.seg.num_classes'):
        data.dataset_info(c)


def _matching_scene_parse(self, split, **kwargs):
    """mock_data's as_dataset_fn: PNG-encoded images with annotations of the same size (what the
    pipeline reads with SkipDecoding; the default mock draws the two sizes independently)."""
    import tensorflow as tf
    del self, kwargs
    rng = np.random.RandomState(0 if split == 'train' else 1)
    examples = []
    for _ in range(8):
        h, w = rng.randint(20, 60, 2)
        ann = np.repeat(rng.randint(0, 151, (h, w, 1)).astype(np.uint8), 3, -1)
        image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        examples.append((tf.io.encode_png(image).numpy(), tf.io.encode_png(ann).numpy()))
    return tf.data.Dataset.from_tensor_slices({'image': [i for i, _ in examples],
                                               'annotation': [a for _, a in examples]})


def _scene_parse_config():
    c = load_config('digits_segmentation', 'runlocal')
    c.dataset = 'scene_parse150'
    c.eval_split = 'test'
    c.seg.scale = (96, 64)
    c.seg.test_scale = (96, 64)
    c.seg.eval_canvas = (96, 96)
    c.seg.eval_label_canvas = (64, 64)
    c.num_train_steps = 1
    return c


def test_scene_parse150_mock_with_mismatched_sizes_is_a_clear_error():
    import tensorflow_datasets as tfds
    from swinv2_jax.data import segmentation as data
    with tfds.testing.mock_data(num_examples=4):
        it = data.train_iterator(_scene_parse_config(), (64, 64), local_batch_size=2)
        with pytest.raises(ValueError, match=r'the mask of .*scene_parse150:train\[\d\]'):
            next(it)


def test_scene_parse150_train_step_and_eval_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds
    c = _scene_parse_config()
    with tfds.testing.mock_data(as_dataset_fn=_matching_scene_parse):
        state = trainer.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 1 and state.batch_stats is not None
    records = metrics.read_metrics(str(tmp_path))
    assert any('loss' in r and np.isfinite(r['loss']) for r in records)
    final = [r for r in records if 'eval_miou' in r][-1]
    assert final['eval_examples'] == 8 and info_classes(tmp_path) == 150
    for key in ('eval_miou', 'eval_macc', 'eval_aacc'):
        assert 0.0 <= final[key] <= 1.0


def info_classes(workdir) -> int:
    ckpt = checkpointing.Checkpointer(str(workdir), read_only=True, async_save=False)
    meta = ckpt.restore_meta()
    ckpt.close()
    assert meta['objective'] == 'segmentation'
    return seg_objective.model_from_meta(meta).num_classes


# ----------------------------------------------------------------------------------------------
# End to end on the embedded scenes: a resumed run equals an uninterrupted one
# ----------------------------------------------------------------------------------------------

def test_resumed_segmentation_run_equals_uninterrupted(tmp_path):
    c = load_config('digits_segmentation', 'runlocal')
    c.num_train_steps = 2
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 1
    full = trainer.train_and_evaluate(c, str(tmp_path / 'full'))
    part = c.copy_and_resolve_references()
    part.num_train_steps = 1
    trainer.train_and_evaluate(part, str(tmp_path / 'resumed'))
    resumed = trainer.train_and_evaluate(c, str(tmp_path / 'resumed'))   # from its step-1 checkpoint
    for a, b in zip(jax.tree.leaves((full.params, full.batch_stats)),
                    jax.tree.leaves((resumed.params, resumed.batch_stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ev = [r for r in metrics.read_metrics(str(tmp_path / 'full')) if 'eval_miou' in r][-1]
    er = [r for r in metrics.read_metrics(str(tmp_path / 'resumed')) if 'eval_miou' in r][-1]
    assert ev['eval_miou'] == er['eval_miou']


def test_init_from_a_classifier_fills_the_backbone_and_initialises_the_heads(tmp_path):
    from swinv2_jax.models import create_model
    from swinv2_jax.train import init_from
    from swinv2_jax.weights.converted import save_converted
    arch = dict(img_size=32, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4)
    source = create_model('swinv2_tiny_window8_256', num_classes=7, **arch)
    src_vars = source.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    save_converted(str(tmp_path / 'cls'), src_vars, source)
    # the target at another resolution and window (CPB: nothing to resize)
    target = create_model('upernet_swinv2_tiny_window8_256', num_classes=5, head_channels=8, aux_channels=8,
                          **{**arch, 'img_size': 64, 'window_size': 8})
    init = target.init(jax.random.key(2), jnp.zeros((1, 64, 64, 3)))['params']
    params, report = init_from.load_pretrained(str(tmp_path / 'cls'), target, init)
    for a, b in zip(jax.tree.leaves(params['backbone']), jax.tree.leaves(
            {k: v for k, v in src_vars['params'].items() if k not in ('head', 'norm')})):
        assert a.shape == b.shape
    np.testing.assert_array_equal(params['backbone']['patch_embed']['proj']['kernel'],
                                  src_vars['params']['patch_embed']['proj']['kernel'])
    np.testing.assert_array_equal(params['decode_head']['conv_seg']['kernel'] if 'conv_seg' in params['decode_head']
                                  else jax.tree.leaves(params['decode_head'])[0],
                                  init['decode_head']['conv_seg']['kernel'] if 'conv_seg' in init['decode_head']
                                  else jax.tree.leaves(init['decode_head'])[0])
    assert any('head' in d for d in report.dropped)    # the classifier's head is not used
