"""Input pipeline (swinv2_jax.data): transforms, determinism, sharding, datasets; and Mixup/CutMix
(swinv2_jax.train.mix, pure JAX, on the device side of the step).

CPU only, about 30 s of CPU time on 2 cores: the embedded digits (built once, offline, into a
temporary data_dir), a temporary folder of PNGs, and `tfds.testing.mock_data` for ImageNet and
ImageNet-V2.
"""
import hashlib
import socket

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')

from swinv2_jax import data  # noqa: E402
from swinv2_jax.data import digits as digits_lib  # noqa: E402
from swinv2_jax.data import pipeline, transforms  # noqa: E402
from swinv2_jax.train import mix as mix_lib  # noqa: E402

MEAN, STD = pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD
# Every augmentation of the recipe on (appendix A1); digits are 32x32.
RECIPE = dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True,
              randaugment=dict(num_layers=2, magnitude=9, magnitude_std=0.5), color_jitter=0.4,
              random_erasing=0.25, mixup=0.8, cutmix=1.0, mix_prob=1.0, switch_prob=0.5,
              label_smoothing=0.1, crop_pct=0.9, interpolation='bicubic', mean=MEAN, std=STD)
# No randomness at all on square images: the train transform is then the identity + normalise,
# so an example can be recognised by its pixels.
IDENTITY = dict(RECIPE, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False,
                randaugment=dict(num_layers=0), color_jitter=0.0, random_erasing=0.0, crop_pct=1.0)


def _config(dataset='digits', data_dir=None, aug=RECIPE, **kw):
    config = dict(dataset=dataset, data_dir=data_dir, train_split='train', eval_split='test',
                  extra_evals=[], seed=0, aug=dict(aug))
    config.update(kw)
    return ml_collections.ConfigDict(config)


def _fingerprint(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
    """`digits` built once for this module, with every network connection refused."""
    path = str(tmp_path_factory.mktemp('tfds'))

    def refuse(*args, **kwargs):
        raise OSError('the digits builder must not use the network')

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, 'connect', refuse)
        digits_lib.builder(path)
    return path


# ---------------------------------------------------------------------------------- digits


def test_digits_builder_fixed_split_offline(digits_dir):
    builder = digits_lib.builder(digits_dir)
    assert builder.info.splits['train'].num_examples == 1497
    assert builder.info.splits['test'].num_examples == 300
    assert builder.info.features['label'].num_classes == 10
    indices, labels = {}, {}
    for split in ('train', 'test'):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        indices[split] = np.array([ex['index'] for ex in examples])
        labels[split] = np.array([ex['label'] for ex in examples])
        image = examples[0]['image']
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert not set(indices['train']) & set(indices['test'])
    assert len(set(indices['train']) | set(indices['test'])) == 1797
    assert np.bincount(labels['test']).min() >= 29 and np.bincount(labels['test']).max() <= 31
    # The held-out split is fixed forever: these are its indices into load_digits().
    held_out = ','.join(map(str, sorted(indices['test'])))
    assert hashlib.sha256(held_out.encode()).hexdigest()[:16] == _HELD_OUT_SHA256_PREFIX
    np.testing.assert_array_equal(np.sort(indices['test']),
                                  digits_lib.test_indices(digits_lib.load_arrays()[1]))


_HELD_OUT_SHA256_PREFIX = '4cddb2323cc098c6'


# ------------------------------------------------------------------------------- transforms


def test_random_resized_crop_window_bounds():
    for i, (height, width) in enumerate([(300, 400), (37, 53), (10, 1000), (5, 5)]):
        for j in range(20):
            seed = tf.constant([i, j], tf.int64)
            top, left, h, w = [int(v) for v in transforms.random_resized_crop_window(
                seed, height, width, (0.08, 1.0), (3 / 4, 4 / 3))]
            assert 0 <= top <= height - h and 0 <= left <= width - w and h > 0 and w > 0
    # A strip no crop of aspect 3/4..4/3 fits: timm's fallback, the centred 4/3 crop of full height.
    top, left, h, w = [int(v) for v in transforms.random_resized_crop_window(
        tf.constant([0, 1], tf.int64), 10, 1000, (0.5, 1.0), (3 / 4, 4 / 3))]
    assert (h, w, top, left) == (10, 13, 0, (1000 - 13) // 2)


@pytest.mark.parametrize('shape, size, crop_pct, resized', [
    ((300, 400), 256, 0.9, (284, 378)),    # shorter side floor(256 / 0.9) = 284
    ((400, 300), 224, 0.875, (341, 256)),
    ((256, 256), 256, 1.0, (256, 256)),
    ((120, 90), 192, 1.0, (256, 192)),     # upscaled
])
def test_eval_resize_crop_sizes(shape, size, crop_pct, resized):
    image = tf.zeros([*shape, 3], tf.uint8)
    out = transforms.eval_resize_crop(image, (size, size), crop_pct)
    assert out.shape == (size, size, 3) and out.dtype == tf.uint8
    # the resize follows timm/torchvision: shorter side floor(size / crop_pct), longer truncated
    short, long = min(shape), max(shape)
    scaled = int(size / crop_pct)
    expected = (scaled, scaled * long // short) if shape[0] <= shape[1] else (scaled * long // short, scaled)
    assert expected == resized
    # a centred crop: a bright centre pixel of the resized image stays at the centre
    x = np.zeros([*shape, 3], np.uint8)
    x[shape[0] // 2 - 2: shape[0] // 2 + 2, shape[1] // 2 - 2: shape[1] // 2 + 2] = 255
    out = transforms.eval_resize_crop(tf.constant(x), (size, size), crop_pct).numpy()
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(ys.mean() - size / 2) < 2 and abs(xs.mean() - size / 2) < 2


def _test_image(height=37, width=53):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:height, :width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (height + width)], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('name', list(transforms.RAND_AUGMENT_OPS))
def test_rand_augment_ops_at_max_magnitude(name):
    image = tf.constant(_test_image())
    fill = tf.constant([124.0, 116.0, 104.0])
    for sign in (-1.0, 1.0):
        out = transforms.RAND_AUGMENT_OPS[name](image, tf.constant(10.0), tf.constant(sign), fill)
        assert out.shape == image.shape and out.dtype == tf.uint8
        assert 0 <= int(tf.reduce_min(out)) <= int(tf.reduce_max(out)) <= 255
    if name == 'PosterizeIncreasing':  # 0 bits kept at magnitude 10
        assert int(tf.reduce_max(out)) == 0


def test_rand_augment_pixel_ops_match_pil():
    """The pixel ops reproduce PIL (what timm runs) exactly."""
    Image = pytest.importorskip('PIL.Image')
    ImageEnhance = pytest.importorskip('PIL.ImageEnhance')
    ImageOps = pytest.importorskip('PIL.ImageOps')
    x = _test_image()
    pil = Image.fromarray(x)
    cases = [(transforms.auto_contrast(x), ImageOps.autocontrast(pil)),
             (transforms.equalize(x), ImageOps.equalize(pil)),
             (transforms.posterize(x, 2), ImageOps.posterize(pil, 2)),
             (transforms.solarize(x, 100), ImageOps.solarize(pil, 100))]
    for factor in (0.1, 0.7, 1.9):
        cases += [(transforms.color(x, factor), ImageEnhance.Color(pil).enhance(factor)),
                  (transforms.contrast(x, factor), ImageEnhance.Contrast(pil).enhance(factor)),
                  (transforms.brightness(x, factor), ImageEnhance.Brightness(pil).enhance(factor)),
                  (transforms.sharpness(x, factor), ImageEnhance.Sharpness(pil).enhance(factor))]
    for ours, reference in cases:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    # geometric ops: PIL's matrix and fill, bilinear; within one grey level of PIL's bilinear
    fill = (124, 116, 104)
    ours = transforms.rotate(x, 20.0, fill).numpy().astype(int)
    reference = np.asarray(pil.rotate(20.0, resample=Image.BILINEAR, fillcolor=fill)).astype(int)
    assert np.abs(ours - reference).max() <= 1


def test_rand_augment_is_a_function_of_the_seed():
    image = tf.constant(_test_image(32, 32))
    outs = [transforms.rand_augment(image, tf.constant([0, s], tf.int64), 2, 9, 0.5, (124, 116, 104),
                                    prob=1.0).numpy() for s in (1, 1, 2, 3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not (np.array_equal(outs[0], outs[2]) and np.array_equal(outs[0], outs[3]))


def test_random_erasing_pixel_mode():
    image = tf.ones([40, 40, 3])
    erased = [transforms.random_erasing(image, tf.constant([0, s], tf.int64), prob=1.0).numpy()
              for s in range(10)]
    for out in erased:
        area = np.mean(out[..., 0] != 1.0)
        assert 0.015 <= area <= 1 / 3 + 0.02  # one box of 2%..33% of the image
        assert np.all((out != 1.0) == (out[..., :1] != 1.0))  # same box in every channel
    kept = transforms.random_erasing(image, tf.constant([0, 0], tf.int64), prob=0.0)
    np.testing.assert_array_equal(kept.numpy(), image.numpy())


# ----------------------------------------------------------------------------- Mixup / CutMix


def test_label_smoothing_only():
    labels = jnp.array([0, 3, 9, 3])
    images = jnp.ones((4, 8, 8, 3))
    aug = dict(mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    out, targets = mix_lib.mix(jax.random.PRNGKey(0), images, labels, 10, aug)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets.min(), 0.1 / 10, rtol=1e-6)
    np.testing.assert_allclose(targets[np.arange(4), labels], 1 - 0.1 + 0.1 / 10, rtol=1e-6)


def test_mixup_cutmix_label_mass():
    num_classes, batch = 10, 6
    labels = jnp.arange(batch)  # all distinct, so each target shows its lambda
    # example i is the constant image i: a pixel tells where it came from
    images = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.float32)[:, None, None, None],
                              (batch, 16, 24, 3))
    mix = jax.jit(lambda rng: mix_lib.mix(rng, images, labels, num_classes, RECIPE))
    smoothing = RECIPE['label_smoothing']
    off = smoothing / num_classes
    kinds = set()
    for step in range(24):
        out, targets = mix(jax.random.PRNGKey(step))
        out, targets = np.asarray(out), np.asarray(targets)
        np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-5)
        assert targets.min() >= off - 1e-6  # smoothing mass never mixed away
        own = (targets[np.arange(batch), labels] - off) / (1 - smoothing)  # = lambda
        mirrored = (targets[np.arange(batch), labels[::-1]] - off) / (1 - smoothing)
        np.testing.assert_allclose(own + mirrored, 1.0, rtol=1e-5)
        lam = own[0]
        pasted = np.isclose(out, np.arange(batch)[::-1, None, None, None])
        is_cutmix = np.all(pasted | np.isclose(out, np.arange(batch)[:, None, None, None]))
        if is_cutmix and not np.isclose(lam, 1.0):
            kinds.add('cutmix')
            # lambda equals the area that stayed, after clipping the box at the border
            np.testing.assert_allclose(1.0 - pasted[0, ..., 0].mean(), lam, atol=1e-6)
        elif not is_cutmix:
            kinds.add('mixup')
            np.testing.assert_allclose(out[0], lam * 0 + (1 - lam) * (batch - 1), atol=1e-4)
    assert kinds == {'mixup', 'cutmix'}  # switch_prob 0.5 picks both


def test_mix_prob_zero_keeps_images():
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    out, targets = mix_lib.mix(jax.random.PRNGKey(0), images, jnp.arange(4), 5,
                            dict(RECIPE, mix_prob=0.0, label_smoothing=0.0))
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(targets, np.eye(5)[:4])


# ---------------------------------------------------------------------- train / eval pipelines


def test_train_batches_shapes_and_normalisation(digits_dir):
    it = data.train_iterator(_config(data_dir=digits_dir, aug=IDENTITY), (32, 32), 16)
    batch = next(it)
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
    assert 0 <= batch['label'].min() and batch['label'].max() < 10
    # normalised: pixel values (x / 255 - mean) / std for integer x
    pixels = batch['image'] * np.array(STD, np.float32) + np.array(MEAN, np.float32)
    np.testing.assert_allclose(pixels * 255, np.round(pixels * 255), atol=1e-3)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_train_resume_is_exact(digits_dir):
    """Batches are a function of (seed, step): a resumed iterator continues the same sequence.

    200 examples in batches of 32 make an epoch of 6 steps, so the steps cross an epoch boundary;
    a shuffle window of 50 exercises the multi-block, multi-window order.
    """
    config = _config(data_dir=digits_dir, train_split='train[:200]', shuffle_window=50)
    first = data.train_iterator(config, 32, 32)
    reference = [next(first) for _ in range(8)]
    for start in (3, 7):
        resumed = data.train_iterator(config, 32, 32, start_step=start)
        for step in range(start, 8):
            batch = next(resumed)
            np.testing.assert_array_equal(batch['image'], reference[step]['image'])
            np.testing.assert_array_equal(batch['label'], reference[step]['label'])
    assert not np.array_equal(reference[0]['label'], reference[6]['label'])  # a new epoch order


def _eval_fingerprints(config, split_name, process_count, batch_size):
    """{fingerprint: label} of the masked-in examples of every process, asserting no repeats."""
    seen, batches = {}, []
    for process in range(process_count):
        stream = list(data.eval_iterator(config, split_name, 32, batch_size, process,
                                         process_count))
        batches.append(len(stream))
        for batch in stream:
            assert batch['image'].shape == (batch_size, 32, 32, 3)
            for image, label, mask in zip(batch['image'], batch['label'], batch['mask']):
                if mask:
                    key = _fingerprint(image)
                    assert key not in seen
                    seen[key] = int(label)
                else:
                    assert label == 0 and not image.any()
    assert len(set(batches)) == 1  # every process runs the same number of eval steps
    return seen


def test_per_process_shards_are_disjoint_and_cover(digits_dir):
    """Two processes: disjoint examples that together make the epoch (400 = 2 x 25 x 8)."""
    config = _config(data_dir=digits_dir, aug=IDENTITY, train_split='train[:400]',
                     eval_split='train[:400]', shuffle_window=64)
    everything = _eval_fingerprints(config, 'train[:400]', 1, 400)
    assert len(everything) == 400
    steps = data.steps_per_epoch(400, 8, 2)
    assert steps == 25
    shards = []
    for process in range(2):
        it = data.train_iterator(config, 32, 8, 0, process, 2)
        batches = [next(it) for _ in range(steps)]
        images = [image for batch in batches for image in batch['image']]
        labels = [label for batch in batches for label in batch['label']]
        shards.append({_fingerprint(image) for image in images})
        assert len(shards[-1]) == 200  # no example twice within the epoch
        assert all(everything[_fingerprint(i)] == label for i, label in zip(images, labels))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(everything)


def test_eval_mask_counts_each_example_once(digits_dir):
    config = _config(data_dir=digits_dir, aug=IDENTITY)
    assert data.eval_names(config) == ['test']
    single = _eval_fingerprints(config, 'test', 1, 64)  # 5 batches, the last with 44 padded
    sharded = _eval_fingerprints(config, 'test', 3, 48)  # 3 batches of 48 per process
    assert len(single) == 300 and sharded == single
    with pytest.raises(ValueError, match='unknown evaluation'):
        data.eval_iterator(config, 'validation', 32, 32)


def test_dataset_info(digits_dir):
    info = data.dataset_info(_config(data_dir=digits_dir))
    assert info == data.DatasetInfo(10, 1497, {'test': 300})


def test_folder_dataset(tmp_path):
    colours = {'cat': (200, 10, 10), 'dog': (10, 200, 10), 'emu': (10, 10, 200)}
    for split, count in (('train', 4), ('val', 2)):
        for name, colour in colours.items():
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (30, 20 + 7 * i, 3)  # sizes vary: the transforms resize
                image = np.broadcast_to(np.array(colour, np.uint8), shape)
                (folder / f'{i}.png').write_bytes(tf.io.encode_png(image).numpy())
    config = _config(f'folder:{tmp_path}', aug=dict(IDENTITY, crop_pct=0.9),
                     eval_split='validation')  # served by the 'val' folder
    info = data.dataset_info(config)
    assert info == data.DatasetInfo(3, 12, {'validation': 6})
    batch = next(data.train_iterator(config, 16, 4))
    assert batch['image'].shape == (4, 16, 16, 3)
    names = sorted(colours)
    expected = {label: (np.array(colours[name]) / 255 - MEAN) / STD
                for label, name in enumerate(names)}
    batches = list(data.eval_iterator(config, 'validation', 16, 4))
    assert sum(b['mask'].sum() for b in batches) == 6
    for batch in batches:
        for image, label, mask in zip(batch['image'], batch['label'], batch['mask']):
            if mask:  # a constant image stays constant through resize and crop
                np.testing.assert_allclose(image, np.broadcast_to(expected[label], image.shape),
                                           atol=1e-5)


def test_imagenet_and_imagenet_v2_under_mock_data():
    config = _config('imagenet2012', train_split='train', eval_split='validation',
                     extra_evals=[('imagenet_v2', 'test')])
    with tfds.testing.mock_data(num_examples=7):
        assert data.eval_names(config) == ['validation', 'imagenet_v2:test']
        info = data.dataset_info(config)
        assert info.num_classes == 1000 and info.num_train_examples == 7
        assert info.num_eval_examples == {'validation': 7, 'imagenet_v2:test': 7}
        # the full recipe (RandAugment, erasing) on JPEGs, at a non-square size
        batch = next(data.train_iterator(config, (48, 64), 3))
        assert batch['image'].shape == (3, 48, 64, 3) and batch['label'].max() < 1000
        assert np.isfinite(batch['image']).all()
        # two processes with 3 and 4 examples, 2 batches of 2 each
        batches = [list(data.eval_iterator(config, 'validation', 48, 2, p, 2)) for p in range(2)]
        assert [len(b) for b in batches] == [2, 2]
        assert [sum(b['mask'].sum() for b in bs) for bs in batches] == [3, 4]
        assert batches[0][0]['image'].shape == (2, 48, 48, 3)
        batches = list(data.eval_iterator(config, 'imagenet_v2:test', 48, 4))
        assert sum(b['mask'].sum() for b in batches) == 7


def test_tensorflow_sees_no_gpu():
    assert tf.config.get_visible_devices('GPU') == []
