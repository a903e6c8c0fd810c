"""Input pipeline for training: tensorflow-datasets in, numpy batches out (Mixup/CutMix, pure JAX,
are swinv2_jax.train.mix).

The only package of swinv2_jax that imports TensorFlow. TensorFlow is told at import not to use
any GPU, so that it never takes accelerator memory from JAX. The contract with the training loop
is docs/training_contract.md:

    info = data.dataset_info(config)
    it = data.train_iterator(config, image_size, local_batch_size, start_step, process_index,
                             process_count)
    for batch in data.eval_iterator(config, name, image_size, local_batch_size, process_index,
                                    process_count): ...
    names = data.eval_names(config)
    errors = data.dataset_errors(config)     # start-up check of the names and splits
"""
import warnings

import tensorflow as tf

try:
    tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TensorFlow had already initialised its devices: too late to hide them
    if tf.config.list_logical_devices('GPU'):
        warnings.warn('TensorFlow already holds a GPU and may take memory JAX needs: import '
                      "swinv2_jax.data (or call tf.config.set_visible_devices([], 'GPU')) before "
                      'running any TensorFlow op')

from swinv2_jax.data.digits import Digits  # noqa: E402  (registers the tfds dataset 'digits')
from swinv2_jax.data.dataset_checks import dataset_errors  # noqa: E402
from swinv2_jax.data.pipeline import (DatasetInfo, dataset_info, eval_iterator,  # noqa: E402
                                      eval_names, steps_per_epoch, train_iterator)

__all__ = ['DatasetInfo', 'Digits', 'dataset_errors', 'dataset_info', 'eval_iterator', 'eval_names', 'steps_per_epoch',
           'train_iterator']
