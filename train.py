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
On a terminal, process 0 shows one progress bar; every run ends with a summary (final metrics,
wall time, where the checkpoints and TensorBoard files are).
"""
import os
import sys
import time

# Before TensorFlow and JAX load: their C++ start-up lines (CPU features, CUDA/TPU probing) are noise
# here. A value already in the environment wins.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')   # TensorFlow C++: errors only
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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
flags.DEFINE_bool('keep_host_memory', True, 'On the CPU: run steps on the calling thread and keep '
                  'freed host memory, so each step reuses its temporaries\' pages instead of faulting '
                  'them in again (swinv2_jax.host_memory). The heap keeps its largest size.')
flags.DEFINE_list('local_device_ids', None, 'Devices of this host this process uses (e.g. 0,1; '
                  'default all): for several processes per GPU host.')


def distributed_requested() -> bool:
    """Whether the flags ask for a `jax.distributed` run."""
    explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    return FLAGS.distributed or any(v is not None for v in explicit)


def initialize_distributed() -> None:
    """`jax.distributed.initialize` from the flags, before anything touches a JAX backend."""
    if not distributed_requested():
        return
    explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
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


def quiet_start_up() -> None:
    """JAX's INFO lines about the backends it could not start ("Unable to initialize backend
    'tpu'", ...) and the INFO lines of Orbax and tensorflow_datasets stay out of the log; their
    warnings still show."""
    import logging as pylogging
    pylogging.getLogger('jax._src.xla_bridge').setLevel(pylogging.WARNING)
    from swinv2_jax.train.metrics import quiet_library_logs
    quiet_library_logs()


def import_tensorflow():
    """`import tensorflow`, its C++ start-up notices hidden (oneDNN, "All log messages before
    absl::InitializeLog()"): its libraries write them to file descriptor 2 as they load, whatever
    TF_CPP_MIN_LOG_LEVEL says (set it to 0 to see them). An import error still raises."""
    if os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0' or 'tensorflow' in sys.modules:
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


def summary(workdir: str, seconds: float) -> str:
    """The closing lines: the last training and evaluation metrics, the wall time, where things are."""
    from swinv2_jax.train import checkpointing, metrics
    records = metrics.read_metrics(workdir)
    train = next((r for r in reversed(records) if 'loss' in r and 'lr' in r), None)
    evals = next((r for r in reversed(records) if any(k.startswith('eval_') for k in r)), None)
    total = next((r['total_steps'] for r in records if 'total_steps' in r), None)

    def fmt(r, keys):
        return ', '.join(f'{k}={r[k]:.4g}' if isinstance(r[k], float) else f'{k}={r[k]}' for k in keys if k in r)
    lines = [f'done in {seconds:.1f} s (wall time)']
    if train is not None:
        lines.append(f'  step {train["step"]}/{total or "?"}: ' + fmt(train, ('loss', 'lr', 'images_per_sec')))
    if evals is not None:
        keys = [k for k in evals if k != 'step' and not k.endswith(('_seconds', '_examples'))]
        lines.append(f'  eval at step {evals["step"]}: ' + fmt(evals, keys))
    directory = checkpointing.checkpoint_dir(workdir)
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    lines.append(f'  checkpoints: {directory}' + (f' (latest step {max(steps)})' if steps else ' (none)'))
    lines.append(f'  metrics: {os.path.join(workdir, metrics.METRICS_FILE)}; TensorBoard event files: {workdir}')
    return '\n'.join(lines)


def write_curves(workdir: str) -> None:
    """WORKDIR/curves.png (swinv2_jax.plot); a plot that fails only warns: the run is done."""
    try:
        from swinv2_jax.plot import plot_runs
        plot_runs([workdir], os.path.join(workdir, 'curves.png'))
    except Exception as e:  # matplotlib missing or broken, a disk error: never fail a finished run
        logging.warning('no curves.png (%s: %s); python -m swinv2_jax.plot %s draws it later',
                        type(e).__name__, e, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    t0 = time.perf_counter()
    quiet_start_up()
    initialize_distributed()
    # TensorFlow only feeds the input pipeline: keep it off the accelerators.
    tf = import_tensorflow()
    tf.config.set_visible_devices([], 'GPU')
    kept = None
    if FLAGS.keep_host_memory and not distributed_requested():
        # Before anything starts a JAX backend. Several processes run parallel programs, which
        # XLA dispatches to its own threads either way: nothing to keep there.
        from swinv2_jax import host_memory
        kept = host_memory.keep_step_memory()

    import jax
    from swinv2_jax.train import run_log, train_and_evaluate
    workdir = os.path.abspath(FLAGS.workdir)
    log_path = run_log.start(workdir, jax.process_index()) if not os.path.isfile(workdir) else None
    logging.info('config:\n%s', FLAGS.config)
    if kept is not None:
        logging.info('host memory of the steps kept: %s', kept)
    try:
        train_and_evaluate(FLAGS.config, workdir)
    except Exception as e:  # noqa: BLE001  one message on the console, the traceback in the log
        if logging.get_verbosity() > logging.INFO:
            raise
        print(run_log.report(e, log_path), file=sys.stderr, flush=True)
        return 1
    if jax.process_index() == 0:
        write_curves(workdir)
        print(summary(workdir, time.perf_counter() - t0), flush=True)
    return 0


if __name__ == '__main__':
    app.run(lambda argv: sys.exit(main(argv)))
