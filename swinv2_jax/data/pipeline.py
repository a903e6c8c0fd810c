"""Input pipeline of `train.py`: tfds datasets in, numpy batches out (docs/training_contract.md).

Datasets (`config.dataset`): any TFDS image-classification name (`imagenet2012`, `imagenet_v2`,
...), `digits` (the embedded scikit-learn digits, built on first use, see `digits.py`) and
`folder:/path` (`tfds.folder_dataset.ImageFolder`: `/path/<split>/<class>/<image>`).

Determinism and resumption. The batch at global step `s` is a pure function of (`config.seed`, s,
process_index, process_count):
- each process reads the contiguous range [n p / P, n (p + 1) / P) of the split's n examples
  (`tfds.even_splits` style) as tfds split slices, so it opens only the files holding them;
- an epoch has (n // P) // local_batch steps, which equals n // global_batch: every process takes
  the same number of steps, and the few examples left over differ from epoch to epoch;
- the order of an epoch is drawn from stateless ops keyed by (seed, P, p, epoch): the shard is cut
  into up to 16 blocks read sequentially and interleaved in a random order (a random permutation of
  the block labels), and windows of `shuffle_window` consecutive examples are permuted. For shards
  no larger than a window (digits, small folders) this is an exact uniform shuffle per epoch;
  for ImageNet it adds to the random order tfds gave the records when it wrote them;
- every random augmentation of an example is keyed by (seed, P, p, epoch, position in epoch);
  so is SimMIM's block mask (`mim_mask`, objective 'simmim' only: see simmim_mask.py), which in
  evaluation is keyed by (seed, index of the example in the split) instead.
`train_iterator(start_step=s)` jumps to epoch s // steps_per_epoch by arithmetic and skips the
rest of the steps within that epoch on the still-encoded records, before decoding or augmenting.
For digits that is instant; for ImageNet it reads (never decodes) up to one epoch of the
process's shard, since the window permutation needs its input: at most 1/P of the ~140 GB of
records, at disk speed. `tf.data` runs with deterministic ordering, so parallel decoding does not
change the order.

Evaluation reads each process's contiguous shard in a fixed order and pads every process to the
same number of batches (`ceil(ceil(n / P) / local_batch)`) with `mask` 0, so that the sum of the
masks over all processes is exactly n.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterator, NamedTuple, Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from swinv2_jax.data import digits as digits_lib
from swinv2_jax.constants import IMAGENET_MEAN, IMAGENET_STD
from swinv2_jax.data import image_files, simmim_mask, transforms
from swinv2_jax.data.dataset_checks import EVAL_ALIASES, FOLDER_PREFIX
from absl import logging

DEFAULT_SHUFFLE_WINDOW = 8192   # examples per permuted window (~0.9 GB of ImageNet JPEGs, 2x briefly)
MAX_BLOCKS = 16                 # sequential readers interleaved per process and epoch
_NUM_EPOCHS_UNBOUNDED = 2 ** 40


class DatasetInfo(NamedTuple):
    """What the training loop needs to know about the configured data."""
    num_classes: int
    num_train_examples: int
    num_eval_examples: dict  # eval name (see `eval_names`) -> number of examples


# ----------------------------------------------------------------------------------- sources


class _Source(NamedTuple):
    """One split of one dataset, read by example range in a fixed order.

    `segments` lists the split as absolute (split name, start, stop) pieces when tfds can read
    slices of it (prepared tfds datasets), so a range is read at the file-instruction level;
    None for `ImageFolder` and for mocked builders (`tfds.testing.mock_data`), which are read as
    one stream and sliced with skip/take.
    """
    builder: Any
    split: str
    num_examples: int
    segments: tuple | None
    image_key: str
    label_key: str
    encoded: bool  # the image feature is read as encoded bytes (tfds.features.Image)
    num_classes: int
    exclude: tuple = ()  # folder datasets with skip_bad_images: the unreadable files' paths

    def read(self, start: int, stop: int) -> tf.data.Dataset:
        """Examples [start, stop) of the split as (image, int32 label), image not yet decoded."""
        decoders = {self.image_key: tfds.decode.SkipDecoding()} if self.encoded else None
        read_config = tfds.ReadConfig(skip_prefetch=True)
        if self.segments is not None:
            ds = self.builder.as_dataset(split=_slice_spec(self.segments, start, stop),
                                         shuffle_files=False, decoders=decoders,
                                         read_config=read_config)
        else:
            ds = self.builder.as_dataset(split=self.split, shuffle_files=False,
                                         decoders=decoders, read_config=read_config)
            ds = _without(ds, self.exclude).skip(start).take(stop - start)
        image_key, label_key = self.image_key, self.label_key
        return ds.map(_plain(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32))))


def _plain(fn):
    """`fn` traced as written: no AutoGraph conversion (nothing here needs it; it only costs time)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _without(ds: tf.data.Dataset, paths: tuple) -> tf.data.Dataset:
    """`ds` without the examples whose 'image/filename' is one of `paths`."""
    if not paths:
        return ds
    table = tf.constant(list(paths))
    return ds.filter(_plain(lambda ex: tf.logical_not(tf.reduce_any(tf.equal(ex['image/filename'], table)))))


_CHECKED_FOLDERS: dict = {}


def _bad_images(root: str, split: str, skip: bool) -> tuple:
    """Full paths of the unreadable images of `root/split` (empty: all read) when `skip`; else
    BadImagesError listing every unreadable file of the folder (all splits), before any training."""
    if root not in _CHECKED_FOLDERS:
        _CHECKED_FOLDERS[root] = image_files.bad_files(root)
        bad = _CHECKED_FOLDERS[root]
        if bad and skip:
            logging.warning('skip_bad_images: skipping %d unreadable image file(s) of %s:%s', len(bad), root,
                            image_files.describe(root, bad))
    bad = _CHECKED_FOLDERS[root]
    if bad and not skip:
        raise image_files.BadImagesError(
            f'{len(bad)} image file(s) of folder:{root} cannot be read:{image_files.describe(root, bad)}\n'
            f'Replace or delete them, or pass --config.skip_bad_images=True to train without them.')
    prefix = split + os.sep
    return tuple(os.path.join(root, rel) for rel in sorted(bad) if rel.startswith(prefix))


def _slice_spec(segments: Sequence[tuple], start: int, stop: int) -> str:
    """The tfds split string of examples [start, stop) of the concatenated `segments`."""
    parts, offset = [], 0
    for name, lo, hi in segments:
        a, b = max(start - offset, 0), min(stop - offset, hi - lo)
        if a < b:
            parts.append(f'{name}[{lo + a}:{lo + b}]')
        offset += hi - lo
    if not parts:
        raise ValueError(f'empty example range [{start}, {stop})')
    return '+'.join(parts)


def _builder(dataset: str, data_dir: str | None):
    if dataset == 'digits':
        return digits_lib.builder(data_dir)
    if dataset.startswith(FOLDER_PREFIX):
        return tfds.folder_dataset.ImageFolder(dataset[len(FOLDER_PREFIX):])
    builder = tfds.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
        # ImageNet: extracts the manual download (see README "## Data"); run it once, from a
        # single process, before a multi-process run.
        builder.download_and_prepare()
    return builder


def _open(dataset: str, split: str, data_dir: str | None = None, skip_bad_images: bool = False) -> _Source:
    """Opens `split` of `dataset` (preparing it if needed) and counts its examples. A folder's image
    files are checked first (image_files.py): unreadable ones are an error, or skipped."""
    builder = _builder(dataset, data_dir)
    info = builder.info
    folder = isinstance(builder, tfds.folder_dataset.ImageFolder)
    if folder and split not in info.splits.keys() and split in EVAL_ALIASES:
        split = next((s for s in EVAL_ALIASES if s in info.splits.keys()), split)
    if folder and split not in info.splits.keys():
        raise ValueError(f'{dataset} has no split {split!r}; its sub-folders are '
                         f'{sorted(info.splits.keys())}')
    exclude = _bad_images(dataset[len(FOLDER_PREFIX):], split, skip_bad_images) if folder else ()

    keys = info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        image_key, label_key = 'image', 'label'
    encoded = isinstance(info.features[image_key], tfds.features.Image)

    segments = None
    if not folder and len(info.splits):
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(info.splits)
        # tfds writes an open end as None: from_ None = 0, to None = the split's size
        segments = tuple((i.splitname, i.from_ or 0,
                          info.splits[i.splitname].num_examples if i.to is None else i.to)
                         for i in instructions)
        num_examples = sum(hi - lo for _, lo, hi in segments)
    else:  # ImageFolder (no sub-splits) or a mocked builder (no split metadata)
        ds = builder.as_dataset(split=split, shuffle_files=False)
        num_examples = int(ds.cardinality())
        if num_examples < 0:  # unknown cardinality: count once
            num_examples = int(ds.reduce(0, lambda count, _: count + 1))
    return _Source(builder, split, num_examples - len(exclude), segments, image_key, label_key, encoded,
                   info.features[label_key].num_classes, exclude)


def _shard(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Process `process_index`'s contiguous range of examples (sizes differ by at most one)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    return (num_examples * process_index // process_count,
            num_examples * (process_index + 1) // process_count)


def _eval_sources(config) -> dict[str, tuple[str, str]]:
    sources = {}
    if config.get('eval_split'):
        sources[config.eval_split] = (config.dataset, config.eval_split)
    for dataset, split in config.get('extra_evals', None) or ():
        sources[f'{dataset}:{split}'] = (dataset, split)
    return sources


def eval_names(config) -> list[str]:
    """Names of the evaluations: `config.eval_split`, then 'dataset:split' of `extra_evals`."""
    return list(_eval_sources(config))


def dataset_info(config) -> DatasetInfo:
    """Class count and example counts of the training split and of every evaluation."""
    data_dir = config.get('data_dir', None)
    skip = bool(config.get('skip_bad_images', False))
    train = _open(config.dataset, config.train_split, data_dir, skip)
    counts = {name: _open(dataset, split, data_dir, skip).num_examples
              for name, (dataset, split) in _eval_sources(config).items()}
    return DatasetInfo(train.num_classes, train.num_examples, counts)


# ----------------------------------------------------------------------------- augmentation


def _size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _aug(config, key: str, default):
    aug = config.get('aug', None) or {}
    value = aug.get(key, default)
    return default if value is None else value


def _train_preprocess(config, image_size: tuple[int, int], encoded: bool):
    """The per-example train transform (image, seed) -> normalised float32 [H, W, 3]."""
    scale = tuple(_aug(config, 'crop_scale', (0.08, 1.0)))
    ratio = tuple(_aug(config, 'crop_ratio', (3 / 4, 4 / 3)))
    method = _aug(config, 'interpolation', 'bicubic')
    hflip = bool(_aug(config, 'hflip', True))
    mean = tuple(_aug(config, 'mean', IMAGENET_MEAN))
    std = tuple(_aug(config, 'std', IMAGENET_STD))
    randaugment = _aug(config, 'randaugment', {}) or {}
    ra_layers = int(randaugment.get('num_layers', 0) or 0)
    ra_magnitude = float(randaugment.get('magnitude', 9))
    ra_std = float(randaugment.get('magnitude_std', 0.5) or 0.0)
    jitter = float(_aug(config, 'color_jitter', 0.0))
    erasing = _aug(config, 'random_erasing', 0.0)
    erase_prob = float(erasing.get('prob', 0.0) if hasattr(erasing, 'get') else erasing)
    fill = tuple(min(255, round(255 * m)) for m in mean)  # timm's img_mean for uncovered areas

    def preprocess(image, seed):
        s_crop, s_flip, s_color, s_erase = transforms.split_seed(seed, 4)
        image = transforms.decode_and_random_crop(image, s_crop, scale, ratio, encoded)
        image = transforms.resize(image, image_size, method)
        image.set_shape([*image_size, 3])
        if hflip:
            image = transforms.random_flip(image, s_flip)
        if ra_layers > 0:
            image = transforms.rand_augment(image, s_color, ra_layers, ra_magnitude, ra_std, fill)
        elif jitter > 0:  # timm turns color jitter off when RandAugment is on
            image = transforms.color_jitter(image, s_color, jitter)
        image = transforms.normalize(image, mean, std)
        if erase_prob > 0:
            image = transforms.random_erasing(image, s_erase, erase_prob)
        return image

    return preprocess


def _eval_preprocess(config, image_size: tuple[int, int], encoded: bool):
    crop_pct = float(_aug(config, 'crop_pct', 0.875))
    method = _aug(config, 'interpolation', 'bicubic')
    mean = tuple(_aug(config, 'mean', IMAGENET_MEAN))
    std = tuple(_aug(config, 'std', IMAGENET_STD))

    def preprocess(image):
        image = transforms.decode_rgb(image) if encoded else transforms.as_rgb(image)
        image = transforms.eval_resize_crop(image, image_size, crop_pct, method)
        return transforms.normalize(image, mean, std)

    return preprocess


# --------------------------------------------------------------------------------- iterators


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # One thread per op: the parallelism is across examples (tf.data's recommendation for input
    # pipelines, and it leaves the cores to the training step).
    options.threading.max_intra_op_parallelism = 1
    return options


def _root_seed(seed: int, *data) -> tf.Tensor:
    return transforms.fold_seed(tf.constant([0, int(seed)], tf.int64), *data)


def steps_per_epoch(num_examples: int, local_batch_size: int, process_count: int = 1) -> int:
    """Train steps per epoch: (n // P) // b, which is n // (P b) = n // global_batch."""
    return (num_examples // process_count) // local_batch_size


def _blocks(source: _Source, start: int, stop: int, window: int) -> list[tuple]:
    """Cuts [start, stop) into up to MAX_BLOCKS contiguous (dataset, size) blocks.

    One block when the shard fits a window or the source reads only as a stream (skip/take
    would re-read the stream once per block).
    """
    count = stop - start
    num_blocks = 1 if source.segments is None else max(1, min(MAX_BLOCKS, count // window))
    bounds = [start + count * i // num_blocks for i in range(num_blocks + 1)]
    return [(source.read(a, b), b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _epoch_order(blocks: list[tuple], seed: tf.Tensor, window: int) -> tf.data.Dataset:
    """One epoch of a process's shard in the order keyed by `seed` (encoded examples)."""
    if len(blocks) == 1:
        stream = blocks[0][0]
    else:
        labels = tf.repeat(tf.range(len(blocks), dtype=tf.int64), [n for _, n in blocks])
        choice = tf.random.experimental.stateless_shuffle(labels, transforms.fold_seed(seed, 1))
        stream = tf.data.Dataset.choose_from_datasets(
            [ds for ds, _ in blocks], tf.data.Dataset.from_tensor_slices(choice))

    def permute(index, batch):  # batch = (encoded images [w], labels [w])
        size = tf.shape(batch[1])[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(size), transforms.fold_seed(seed, 2, index))
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda t: tf.gather(t, order), batch))

    return stream.batch(window).enumerate().flat_map(_plain(permute))


def train_iterator(config, image_size, local_batch_size: int, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Endless training batches of this process, from global step `start_step` on.

    Yields {'image': float32 [b, H, W, 3] normalised, 'label': int32 [b]}; batch k of the
    iterator is the batch of global step start_step + k, identical to what an iterator started
    at 0 yields at that step. Epochs follow each other without end: stop after the step count
    you want. Reads `config.dataset`, `train_split`, `data_dir`, `seed`, `aug` and the optional
    `shuffle_window` (default 8192).
    """
    image_size = _size(image_size)
    source = _open(config.dataset, config.train_split, config.get('data_dir', None),
                   bool(config.get('skip_bad_images', False)))
    steps = steps_per_epoch(source.num_examples, local_batch_size, process_count)
    if steps < 1:
        raise ValueError(f'{config.dataset}:{config.train_split} has {source.num_examples} '
                         f'examples: too few for {process_count} process(es) x local batch '
                         f'{local_batch_size}')
    examples_per_epoch = steps * local_batch_size
    window = int(config.get('shuffle_window', None) or DEFAULT_SHUFFLE_WINDOW)
    blocks = _blocks(source, *_shard(source.num_examples, process_index, process_count), window)

    seed = int(config.get('seed', 0))
    order_seed = _root_seed(seed, 0, process_count, process_index)
    augment_seed = _root_seed(seed, 1, process_count, process_index)
    start_epoch, step_in_epoch = divmod(int(start_step), steps)
    skip = step_in_epoch * local_batch_size

    def epoch_examples(epoch):
        examples = _epoch_order(blocks, transforms.fold_seed(order_seed, epoch), window)
        examples = examples.take(examples_per_epoch).enumerate()
        examples = examples.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))
        return examples.map(_plain(lambda position, ex: (epoch, position, ex)))

    preprocess = _train_preprocess(config, image_size, source.encoded)
    mim = simmim_mask.from_config(config, image_size)   # objective 'simmim': + 'mim_mask'
    mask_seed = _root_seed(seed, 2, process_count, process_index)

    def example(epoch, position, ex):
        image, label = ex
        out = {'image': preprocess(image, transforms.fold_seed(augment_seed, epoch, position)),
               'label': label}
        if mim is not None:
            out['mim_mask'] = mim.tf_block_mask(transforms.fold_seed(mask_seed, epoch, position))
        return out

    ds = tf.data.Dataset.range(start_epoch, _NUM_EPOCHS_UNBOUNDED).flat_map(_plain(epoch_examples))
    ds = ds.map(_plain(example), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.with_options(_options())))


def eval_iterator(config, name: str, image_size, local_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
    """One pass over the evaluation `name` (one of `eval_names(config)`), this process's share.

    Yields {'image': float32 [b, H, W, 3], 'label': int32 [b], 'mask': float32 [b]}; every
    process yields the same number of batches, padded with zero images of mask 0, and each
    example of the split has mask 1 in exactly one batch of one process.
    """
    sources = _eval_sources(config)
    if name not in sources:
        raise ValueError(f'unknown evaluation {name!r}; this config has {list(sources)}')
    dataset, split = sources[name]
    image_size = _size(image_size)
    source = _open(dataset, split, config.get('data_dir', None), bool(config.get('skip_bad_images', False)))
    start, stop = _shard(source.num_examples, process_index, process_count)
    num_batches = math.ceil(math.ceil(source.num_examples / process_count) / local_batch_size)
    preprocess = _eval_preprocess(config, image_size, source.encoded)

    padding = {'image': tf.zeros([*image_size, 3], tf.float32), 'label': tf.constant(0, tf.int32),
               'mask': tf.constant(0.0, tf.float32)}
    mim = simmim_mask.from_config(config, image_size)   # keyed by (seed, index in the split)
    if mim is not None:
        padding['mim_mask'] = tf.zeros(mim.grid, tf.int32)
    mask_seed = _root_seed(int(config.get('seed', 0)), 3)

    def example(index, image, label):
        out = {'image': preprocess(image), 'label': label, 'mask': tf.constant(1.0, tf.float32)}
        if mim is not None:
            out['mim_mask'] = mim.tf_block_mask(transforms.fold_seed(mask_seed, index))
        return out

    ds = tf.data.Dataset.from_tensors(padding).repeat(num_batches * local_batch_size - (stop - start))
    if stop > start:
        examples = source.read(start, stop).enumerate(start).map(
            _plain(lambda index, ex: example(index, *ex)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = examples.concatenate(ds)
    ds = ds.batch(local_batch_size).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds.with_options(_options())))


__all__ = ['DatasetInfo', 'dataset_info', 'train_iterator', 'eval_iterator', 'eval_names',
           'steps_per_epoch', 'IMAGENET_MEAN', 'IMAGENET_STD']
