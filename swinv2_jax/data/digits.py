"""`digits`: the 1,797 handwritten digits that ship inside scikit-learn, as a local TFDS dataset.

The embedded default of `train.py`: it needs no network (scikit-learn reads the images from a file
inside its own package) and builds in a few seconds, so a fresh machine can train something real.

- Images: the 8x8 grey levels 0..16 of `sklearn.datasets.load_digits()`, upscaled to 32x32 with
  bilinear interpolation (half-pixel centres, edge pixels clamped, written out in numpy below so
  that the bytes never depend on an image library's version), scaled to 0..255 by `v * 255 / 16`,
  rounded, and repeated over three channels: uint8 RGB, ink bright on a black background, stored as
  lossless PNG.
- Labels 0..9; `index` is the image's position in `load_digits()`, to trace any example back.
- Splits, fixed forever: 'test' holds 300 images, stratified (each class gets its share of 300 by
  largest remainder: 29 to 31 per class) and chosen inside each class by the SHA-256 of
  `'swinv2-jax-digits/<index>'`, which no random generator or library version can change;
  'train' holds the other 1,497.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

IMAGE_SIZE = 32
NUM_TEST = 300
_HASH_SALT = 'swinv2-jax-digits/'


def default_data_dir() -> str:
    """Where `digits` is built when the config gives no `data_dir`: the user cache.

    `$XDG_CACHE_HOME/swinv2_jax/tensorflow_datasets`, by default
    `~/.cache/swinv2_jax/tensorflow_datasets` (not `~/tensorflow_datasets`, which holds
    datasets a user prepared on purpose).
    """
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'swinv2_jax', 'tensorflow_datasets')


def upscale(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear resize of [N, h, w] arrays to [N, size, size] (half-pixel centres, clamped edges)."""

    def weights(n_in):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        matrix = np.zeros((size, n_in))
        np.add.at(matrix, (np.arange(size), lo), 1 - frac)
        np.add.at(matrix, (np.arange(size), hi), frac)
        return matrix  # [size, n_in]

    rows, cols = weights(images.shape[1]), weights(images.shape[2])
    return np.einsum('yh,nhw,xw->nyx', rows, images.astype(np.float64), cols)


def test_indices(labels: np.ndarray, num_test: int = NUM_TEST) -> np.ndarray:
    """The sorted indices of the held-out split: stratified, chosen by a fixed hash."""
    counts = np.bincount(labels)
    quota = num_test * counts / counts.sum()
    per_class = np.floor(quota).astype(np.int64)
    # Largest remainder; ties go to the lower class id (a stable sort keeps their order).
    order = np.argsort(-(quota - per_class), kind='stable')
    per_class[order[:num_test - per_class.sum()]] += 1
    chosen = []
    for label, k in enumerate(per_class):
        members = np.flatnonzero(labels == label)
        rank = sorted(members, key=lambda i: hashlib.sha256(f'{_HASH_SALT}{i}'.encode()).hexdigest())
        chosen.extend(rank[:k])
    return np.sort(np.asarray(chosen, np.int64))


def load_arrays():
    """(images uint8 [1797, 32, 32, 3], labels int64 [1797]) from scikit-learn's bundled file."""
    from sklearn.datasets import load_digits  # imported here: only building needs scikit-learn
    digits = load_digits()
    grey = np.clip(np.round(upscale(digits.images) * 255.0 / 16.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), digits.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits at 32x32 RGB, with a fixed stratified test split."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'sklearn digits, bilinear 32x32 RGB, 1,497 train / 300 test.'}
    # tfds derives this from the module's package through `importlib_resources`, a package it
    # does not install; the builder's source file is all it needs (to look for checksums).
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                             encoding_format='png'),
                'label': tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
                'index': np.int64,
            }),
            supervised_keys=('image', 'label'),
            homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
            citation='UCI ML hand-written digits (Alpaydin and Kaynak, 1998), via scikit-learn.',
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = load_arrays()
        held_out = np.zeros(len(labels), bool)
        held_out[test_indices(labels)] = True
        return {
            'train': self._generate_examples(images, labels, np.flatnonzero(~held_out)),
            'test': self._generate_examples(images, labels, np.flatnonzero(held_out)),
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {'image': images[i], 'label': int(labels[i]), 'index': int(i)}


def builder(data_dir: str | None = None) -> Digits:
    """The `digits` builder, prepared on first use (a few seconds, no network).

    Concurrent first uses (several processes, or test workers) are serialised by a lock file
    next to the data, so the dataset is built once and the others read it.
    """
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    digits = Digits(data_dir=data_dir)
    if not digits.is_prepared():
        os.makedirs(data_dir, exist_ok=True)
        with _file_lock(os.path.join(data_dir, '.digits.lock')):
            digits = Digits(data_dir=data_dir)
            if not digits.is_prepared():
                config = tfds.download.DownloadConfig(
                    compute_stats=tfds.download.ComputeStatsMode.SKIP)
                digits.download_and_prepare(download_config=config)
    return digits


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
