r"""Train or fine-tune SwinV2 (swinv2_jax.train.train_and_evaluate does the work).

  python train.py --workdir /tmp/w                                  # embedded default: digits
  python train.py --workdir W --config configs/imagenet1k_scratch.py:tiny --config.batch_size=256
  python train.py --workdir W --config configs/imagenet1k_finetune.py:base_256 --config.init_from=CKPT

A workdir that holds checkpoints is resumed from the latest one (data order included).
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and TensorBoard files.')
config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'digits.py'),
    'Training config: configs/NAME.py[:ARG]; override keys with --config.KEY=VALUE.', lock_config=True)
flags.mark_flags_as_required(['workdir'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    # TensorFlow only feeds the input pipeline: keep it off the accelerators.
    import tensorflow as tf
    tf.config.set_visible_devices([], 'GPU')

    from swinv2_jax.train import NonFiniteLossError, train_and_evaluate
    from swinv2_jax.train.metrics import quiet_library_logs
    quiet_library_logs()
    logging.info('config:\n%s', FLAGS.config)
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except NonFiniteLossError as e:
        logging.error('%s', e)
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    app.run(lambda argv: sys.exit(main(argv)))
