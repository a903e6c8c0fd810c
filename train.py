r"""Train or fine-tune SwinV2 (swinv2_jax.train.train_and_evaluate does the work).

  python train.py --workdir /tmp/w                                  # embedded default: digits
  python train.py --workdir W --config configs/imagenet1k_scratch.py:tiny --config.batch_size=256
  python train.py --workdir W --config configs/imagenet1k_finetune.py:base_256 --config.init_from=CKPT

A workdir that holds checkpoints is resumed from the latest one (data order included).

Several processes (hosts) train one model with `jax.distributed`; each runs this same command:

  srun python train.py --distributed --workdir W ...              # SLURM (or Open MPI, ...): detected
  python train.py --coordinator_address=host0:1234 --num_processes=2 --process_id=0 --workdir W ...
  python train.py --coordinator_address=host0:1234 --num_processes=2 --process_id=1 --workdir W ...

Each process feeds its own slice of the global batch; only process 0 writes metrics and logs.
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
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with no arguments: the '
                  'processes find each other on clusters JAX detects (SLURM, Open MPI, Kubernetes, TPU '
                  'pods). Implied by --coordinator_address.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 for jax.distributed (every '
                    'process passes the same); with --num_processes and --process_id.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of a jax.distributed run.')
flags.DEFINE_integer('process_id', None, 'This process\' index in [0, num_processes).')
flags.DEFINE_list('local_device_ids', None, 'Devices of this host this process uses (e.g. 0,1; '
                  'default all): for several processes per GPU host.')


def initialize_distributed() -> None:
    """`jax.distributed.initialize` from the flags, before anything touches a JAX backend."""
    explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if not FLAGS.distributed and all(v is None for v in explicit):
        return
    if FLAGS.coordinator_address is not None and None in explicit:
        raise app.UsageError('--coordinator_address needs --num_processes and --process_id too (or '
                             'pass --distributed alone on a cluster JAX detects, e.g. under SLURM)')
    import jax
    # CPU processes exchange their collectives over gloo (TCP); GPUs use NCCL whatever this says.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    local = None if FLAGS.local_device_ids is None else [int(i) for i in FLAGS.local_device_ids]
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               local_device_ids=local)
    if jax.process_index() != 0:     # one log for the run: the other processes say only what is wrong
        logging.set_verbosity(logging.WARNING)
    logging.info('jax.distributed: process %d of %d, %d local devices of %d', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    initialize_distributed()
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
