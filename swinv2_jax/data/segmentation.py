"""Input of `objective='segmentation'`: images with per-pixel class masks; the API of pipeline.py.

Datasets (`config.dataset`), one row each in DATASETS:
- `scene_parse150`: tensorflow-datasets' ADE20K (150 classes). Its `annotation` is a 3-channel
  PNG whose channel 0 is the class; 0 ("other") becomes the ignore index and the classes shift down
  by one (mmsegmentation's `reduce_zero_label`). Splits 'train' (20,210) and 'test' (the 2,000
  validation images).
- `folder:/path`: `/path/<split>/images/<stem>.jpg|jpeg|png` with `/path/<split>/masks/<stem>.png`
  (single channel, or channel 0 of a colour PNG, values = classes, 255 ignored); the class count is
  `config.seg.num_classes`; `seg.reduce_zero_label=True` if 0 means "unlabelled".
- `digits_scenes`: the embedded default (no network): `digits_scenes.py`.

Every example is checked as it is decoded: a mask whose size differs from its image, or a label
outside [0, classes) other than the ignore index, stops the run with an error naming the example
(`dataset:split[index]`, or the folder's file). Determinism and resumption are pipeline.py's: the
same order and per-example seeds from (seed, process, epoch, position).
"""
from __future__ import annotations

import glob
import math
import os
from typing import Callable, Iterator, NamedTuple

import tensorflow as tf
import tensorflow_datasets as tfds

from swinv2_jax.data import digits_scenes, pipeline, seg_transforms, transforms
from swinv2_jax.data.pipeline import DatasetInfo

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


class SegSource(NamedTuple):
    """One split: `read(start, stop)` gives examples [start, stop) as (image, mask, key) not yet
    decoded; `decode(image, mask)` gives uint8 [H, W, 3] and the raw class mask [H, W]."""
    name: str
    num_examples: int
    num_classes: int
    reduce_zero_label: bool
    read: Callable[[int, int], tf.data.Dataset]
    decode: Callable


def _keys(ds: tf.data.Dataset, prefix: str, start: int) -> tf.data.Dataset:
    return ds.enumerate(start).map(pipeline._plain(
        lambda i, ex: (*ex, tf.strings.join([prefix, '[', tf.strings.as_string(i), ']']))))


def _decode_png_mask(encoded):
    return tf.io.decode_png(encoded, channels=0)[..., 0]


# ------------------------------------------------------------------------------------ sources

def _tfds_source(dataset: str, split: str, data_dir, num_classes: int, reduce_zero_label: bool) -> SegSource:
    builder = pipeline._builder(dataset, data_dir)
    n = builder.info.splits[split].num_examples if split in builder.info.splits else None
    if not n:   # a mocked builder has no split metadata: count once
        n = int(builder.as_dataset(split=split).reduce(0, lambda c, _: c + 1))
    decoders = {'image': tfds.decode.SkipDecoding(), 'annotation': tfds.decode.SkipDecoding()}

    def read(start, stop):
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                                read_config=tfds.ReadConfig(skip_prefetch=True))
        ds = ds.skip(start).take(stop - start).map(pipeline._plain(lambda ex: (ex['image'], ex['annotation'])))
        return _keys(ds, f'{dataset}:{split}', start)

    def decode(image, mask):
        image = transforms.decode_rgb(image) if image.dtype == tf.string else transforms.as_rgb(image)
        mask = _decode_png_mask(mask) if mask.dtype == tf.string else mask[..., 0]
        return image, mask

    return SegSource(f'{dataset}:{split}', n, num_classes, reduce_zero_label, read, decode)


def folder_files(root: str, split: str):
    """(image paths, mask paths) of `root/split`, sorted by stem; an image without its mask is an error."""
    images_dir, masks_dir = os.path.join(root, split, 'images'), os.path.join(root, split, 'masks')
    if not os.path.isdir(images_dir) or not os.path.isdir(masks_dir):
        found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) \
            if os.path.isdir(root) else []
        raise ValueError(f'folder:{root} split {split!r}: expected {images_dir}/ and {masks_dir}/ '
                         f'(images/<stem>.jpg|png with masks/<stem>.png); splits found: {found}')
    images = sorted(p for p in glob.glob(os.path.join(images_dir, '*')) if p.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise ValueError(f'folder:{root}: no .jpg/.jpeg/.png images in {images_dir}')
    masks = [os.path.join(masks_dir, os.path.splitext(os.path.basename(p))[0] + '.png') for p in images]
    missing = [m for m in masks if not os.path.isfile(m)]
    if missing:
        raise ValueError(f'folder:{root}: {len(missing)} image(s) of {split!r} have no mask, e.g. '
                         f'{", ".join(missing[:3])}; every images/<stem>.* needs masks/<stem>.png')
    return images, masks


def _folder_source(root: str, split: str, num_classes: int, reduce_zero_label: bool) -> SegSource:
    if num_classes < 1:
        raise ValueError(f'folder:{root}: set config.seg.num_classes (the classes of its masks; 255 is ignored)')
    images, masks = folder_files(root, split)

    def read(start, stop):
        ds = tf.data.Dataset.from_tensor_slices((images[start:stop], masks[start:stop]))
        return ds.map(pipeline._plain(lambda i, m: (tf.io.read_file(i), tf.io.read_file(m), i)))

    def decode(image, mask):
        return transforms.decode_rgb(image), _decode_png_mask(mask)

    return SegSource(f'folder:{root}:{split}', len(images), num_classes, reduce_zero_label, read, decode)


def _digits_source(split: str) -> SegSource:
    images, masks = digits_scenes.scenes(split)

    def read(start, stop):
        ds = tf.data.Dataset.from_tensor_slices((images[start:stop], masks[start:stop]))
        return _keys(ds, f'digits_scenes:{split}', start)

    return SegSource(f'digits_scenes:{split}', len(images), digits_scenes.NUM_CLASSES, False, read,
                     lambda image, mask: (image, mask))


# name -> open(dataset, split, config): a dataset is a row here ('folder:' matches by prefix)
DATASETS = {
    'scene_parse150': lambda d, split, c: _tfds_source(d, split, c.get('data_dir', None), 150,
                                                       _reduce_zero_label(c, True)),
    'digits_scenes': lambda d, split, c: _digits_source(split),
    'folder:': lambda d, split, c: _folder_source(d[len('folder:'):], split, int(c.seg.num_classes),
                                                  _reduce_zero_label(c, False)),
}


def _reduce_zero_label(config, default: bool) -> bool:
    value = config.seg.get('reduce_zero_label', None)
    return default if value is None else bool(value)


def _unknown(dataset) -> str:
    return (f'unknown segmentation dataset {dataset!r}; valid: {", ".join(DATASETS)} '
            f'(folder:/path with images/ and masks/ per split)')


def _row(dataset) -> str:
    return 'folder:' if isinstance(dataset, str) and dataset.startswith('folder:') else dataset


def dataset_errors(config) -> list:
    """The start-up config check's sentence for an unknown dataset name (train/config_checks.py)."""
    names = [('dataset', config.get('dataset'))]
    names += [(f'extra_evals[{i}]', pair[0]) for i, pair in enumerate(config.get('extra_evals', None) or ())]
    return [f'{key}: {_unknown(name)}' for key, name in names if _row(name) not in DATASETS]


def open_source(config, dataset: str, split: str) -> SegSource:
    if _row(dataset) not in DATASETS:
        raise ValueError(_unknown(dataset))
    return DATASETS[_row(dataset)](dataset, split, config)


# ------------------------------------------------------------------------------ the contract

def _checked(source: SegSource, ignore_index: int):
    """(image, mask, key) -> (uint8 image, int32 label): decoded, labels reduced, sizes and values checked."""
    def fn(image, mask, key):
        image, mask = source.decode(image, mask)
        mask = tf.cast(mask, tf.int32)
        if source.reduce_zero_label:   # mmseg: 0 -> ignore, the rest down by one (255 stays ignored)
            mask = tf.where(mask == 0, 255, mask - 1)
            mask = tf.where(mask == 254, 255, mask)
        mask = tf.where(mask == 255, ignore_index, mask)
        si, sm = tf.shape(image), tf.shape(mask)
        same = tf.reduce_all(si[:2] == sm[:2])
        bad = tf.logical_and(mask != ignore_index, tf.logical_or(mask < 0, mask >= source.num_classes))
        checks = [
            tf.debugging.Assert(same, ['the mask of', key, 'is', sm[0], 'x', sm[1], 'pixels but its image is',
                                       si[0], 'x', si[1], ': masks must be the size of their images '
                                       '(fix or drop the file)'], summarize=3),
            tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
                'the mask of', key, 'has the label value', tf.reduce_max(tf.where(bad, mask, -1)),
                f'outside [0, {source.num_classes}) and not the ignore index {ignore_index}: fix the mask, '
                'or set config.seg.num_classes (or seg.reduce_zero_label if 0 means unlabelled)'], summarize=3)]
        with tf.control_dependencies(checks):
            return tf.identity(image), tf.identity(mask)
    return fn


def _numpy(ds: tf.data.Dataset) -> Iterator[dict]:
    """numpy batches; a failed example check becomes a ValueError with its message."""
    it = iter(tfds.as_numpy(ds.with_options(pipeline._options())))
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as e:
            text = e.message.split('assertion failed: ')[-1].split('\n')[0]
            raise ValueError(text.strip('[]').replace('] [', ' ').replace(' :', ':')) from None


def _size(x):
    return pipeline._size(x)


def eval_names(config) -> list[str]:
    return pipeline.eval_names(config)


def dataset_info(config) -> DatasetInfo:
    train = open_source(config, config.dataset, config.train_split)
    counts = {name: open_source(config, d, s).num_examples for name, (d, s) in pipeline._eval_sources(config).items()}
    return DatasetInfo(train.num_classes, train.num_examples, counts)


def train_iterator(config, image_size, local_batch_size: int, start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict]:
    """Endless {'image': float32 [b, H, W, 3], 'label': int32 [b, H, W]} (H, W = the crop = image_size);
    batch k is the batch of global step start_step + k (pipeline.train_iterator's contract)."""
    crop, seg = _size(image_size), config.seg
    source = open_source(config, config.dataset, config.train_split)
    steps = pipeline.steps_per_epoch(source.num_examples, local_batch_size, process_count)
    if steps < 1:
        raise ValueError(f'{source.name} has {source.num_examples} examples: too few for {process_count} '
                         f'process(es) x local batch {local_batch_size}')
    start, stop = pipeline._shard(source.num_examples, process_index, process_count)
    window = int(config.get('shuffle_window', None) or pipeline.DEFAULT_SHUFFLE_WINDOW)
    seed = int(config.get('seed', 0))
    order_seed = pipeline._root_seed(seed, 0, process_count, process_index)
    augment_seed = pipeline._root_seed(seed, 1, process_count, process_index)
    start_epoch, step_in_epoch = divmod(int(start_step), steps)
    skip = step_in_epoch * local_batch_size
    blocks = [(source.read(start, stop), stop - start)]

    def epoch_examples(epoch):
        examples = pipeline._epoch_order(blocks, transforms.fold_seed(order_seed, epoch), window)
        examples = examples.take(steps * local_batch_size).enumerate()
        examples = examples.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))
        return examples.map(pipeline._plain(lambda position, ex: (epoch, position, ex)))

    check = _checked(source, int(seg.ignore_index))
    options = dict(crop=crop, scale=tuple(seg.scale), ratio_range=tuple(seg.ratio_range),
                   cat_max_ratio=float(seg.cat_max_ratio), hflip=bool(seg.hflip), photometric=bool(seg.photometric),
                   mean=tuple(config.aug.mean), std=tuple(config.aug.std), ignore_index=int(seg.ignore_index))

    def example(epoch, position, ex):
        image, label = check(*ex)
        image, label = seg_transforms.train_transform(
            image, label, transforms.fold_seed(augment_seed, epoch, position), **options)
        return {'image': image, 'label': label}

    ds = tf.data.Dataset.range(start_epoch, 2 ** 40).flat_map(pipeline._plain(epoch_examples))
    ds = ds.map(pipeline._plain(example), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _numpy(ds.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def eval_canvases(config, image_size):
    """(canvas of the resized images, canvas of the original labels) of the evaluation."""
    seg = config.seg
    canvas = tuple(seg.eval_canvas) if seg.get('eval_canvas') else (int(max(seg.test_scale)),) * 2
    canvas = tuple(max(c, s) for c, s in zip(canvas, _size(image_size)))   # windows fit the canvas
    label_canvas = tuple(seg.eval_label_canvas) if seg.get('eval_label_canvas') else canvas
    return canvas, label_canvas


def eval_iterator(config, name: str, image_size, local_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
    """One pass: {'image': float32 [b, *canvas, 3] (resized to seg.test_scale, padded), 'size': int32 [b, 2]
    (the resized size), 'label': int32 [b, *label_canvas] (original size, padded with the ignore index),
    'orig_size': int32 [b, 2], 'mask': float32 [b]}; padded like pipeline.eval_iterator."""
    sources = pipeline._eval_sources(config)
    if name not in sources:
        raise ValueError(f'unknown evaluation {name!r}; this config has {list(sources)}')
    seg = config.seg
    source = open_source(config, *sources[name])
    canvas, label_canvas = eval_canvases(config, image_size)
    start, stop = pipeline._shard(source.num_examples, process_index, process_count)
    num_batches = math.ceil(math.ceil(source.num_examples / process_count) / local_batch_size)
    ignore = int(seg.ignore_index)
    padding = {'image': tf.zeros([*canvas, 3], tf.float32), 'size': tf.constant(canvas, tf.int32),
               'orig_size': tf.constant(label_canvas, tf.int32),
               'label': tf.fill(label_canvas, tf.constant(ignore, tf.int32)), 'mask': tf.constant(0.0)}
    check = _checked(source, ignore)
    options = dict(scale=tuple(seg.test_scale), canvas=canvas, label_canvas=label_canvas, mean=tuple(config.aug.mean),
                   std=tuple(config.aug.std), ignore_index=ignore)

    def example(image, mask, key):
        image, label = check(image, mask, key)
        return {**seg_transforms.eval_transform(image, label, key, **options), 'mask': tf.constant(1.0)}

    ds = tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch_size - (stop - start))
    if stop > start:
        ds = source.read(start, stop).map(pipeline._plain(example), num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True).concatenate(ds)
    return _numpy(ds.batch(local_batch_size).prefetch(tf.data.AUTOTUNE))


__all__ = ['DATASETS', 'SegSource', 'dataset_info', 'eval_canvases', 'eval_iterator', 'eval_names', 'folder_files',
           'open_source', 'train_iterator']
