r"""Multi-device halves of tests/test_sharding.py, run in a subprocess that owns its JAX backend.

Fake CPU devices need XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts, and
a pytest worker has usually started JAX with one device already; so test_sharding.py runs:

  python tests/sharding_worker.py modes OUT.json WORKDIR
      (8 devices) train the same tiny run under each sharding mode; restore the zero1 run's step-2
      checkpoint on a 4-device mesh under fsdp and finish it; write what the tests check to OUT.json.
  python tests/sharding_worker.py train_py [train.py flags]
      train.py's own main (its jax.distributed flags included) on the synthetic data below.

The data: `FakeData`, learnable synthetic images whose GLOBAL batch at step s is the same whatever
the number of processes (each process takes its contiguous slice of it), so a two-process run
must reproduce the one-process run step for step. (The real pipeline shards examples by process,
so its batches depend on the process count: docs/training_contract.md.)
"""
from __future__ import annotations

import collections
import importlib
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# The run every test trains: a two-stage SwinV2 with leaves big enough to shard over 8 devices.
OVERRIDES = {
    'model_overrides.img_size': 16, 'model_overrides.patch_size': 4, 'model_overrides.embed_dim': 32,
    'model_overrides.depths': (1, 1), 'model_overrides.num_heads': (1, 2),
    'model_overrides.window_size': 2, 'model_overrides.drop_path_rate': 0.1,
    'batch_size': 16, 'eval_batch_size': 16, 'num_train_steps': 4, 'eval_every_steps': 0,
    'checkpoint_every_steps': 2, 'keep_checkpoints': 3, 'log_every_steps': 1,
    'optim.warmup_steps': 1, 'optim.ema_decay': 0.5,
}
MODES = ('replicated', 'zero1', 'fsdp')


def train_py_flags() -> list:
    """OVERRIDES as train.py flags (on configs/digits.py:runlocal)."""
    def text(v):
        return '(' + ','.join(map(str, v)) + ')' if isinstance(v, tuple) else str(v)
    return [f'--config={os.path.join(REPO, "configs", "digits.py")}:runlocal'] + [
        f'--config.{k}={text(v)}' for k, v in OVERRIDES.items()]


def make_config(**changes):
    c = importlib.import_module('configs.digits').get_config('runlocal')
    for k, v in {**OVERRIDES, **changes}.items():
        target = c
        *parents, leaf = k.split('.')
        for p in parents:
            target = target[p]
        target[leaf] = v
    return c


DatasetInfo = collections.namedtuple('DatasetInfo', 'num_classes num_train_examples num_eval_examples')


class FakeData:
    num_classes, num_train, num_eval = 4, 64, 16

    @staticmethod
    def _examples(n, hw, seed):
        import numpy as np
        rng = np.random.RandomState(seed)
        labels = rng.randint(0, FakeData.num_classes, n).astype(np.int32)
        images = rng.normal(size=(n, *hw, 3)).astype(np.float32) * 0.5
        return images + labels[:, None, None, None] * 0.5, labels

    def dataset_info(self, config):
        return DatasetInfo(self.num_classes, self.num_train, {'test': self.num_eval})

    def train_iterator(self, config, image_size, local_batch_size, start_step=0, process_index=0,
                       process_count=1):
        import numpy as np
        images, labels = self._examples(self.num_train, image_size, 0)
        global_batch = local_batch_size * process_count
        per_epoch = self.num_train // global_batch
        step = start_step
        while True:
            epoch, i = divmod(step, per_epoch)
            order = np.random.RandomState(int(config.seed) * 1000 + epoch).permutation(self.num_train)
            lo = i * global_batch + process_index * local_batch_size
            idx = order[lo:lo + local_batch_size]
            yield {'image': images[idx], 'label': labels[idx]}
            step += 1

    def eval_names(self, config):
        return ['test']

    def eval_iterator(self, config, name, image_size, local_batch_size, process_index=0, process_count=1):
        import numpy as np
        images, labels = self._examples(self.num_eval, image_size, 1)
        global_batch = local_batch_size * process_count
        for lo in range(0, self.num_eval, global_batch):
            lo += process_index * local_batch_size
            image, label = images[lo:lo + local_batch_size], labels[lo:lo + local_batch_size]
            pad = local_batch_size - len(label)
            yield {'image': np.pad(image, ((0, pad), (0, 0), (0, 0), (0, 0))), 'label': np.pad(label, (0, pad)),
                   'mask': np.pad(np.ones(len(label), np.float32), (0, pad))}


def use_fake_data():
    from swinv2_jax.train import trainer
    data = FakeData()
    trainer._data = lambda: data


# ----------------------------------------------------------------------------------------------

def losses(workdir):
    from swinv2_jax.train import metrics
    return {r['step']: r['loss'] for r in metrics.read_metrics(workdir) if 'loss' in r}


def replicated_leaf_bytes(tree, shardings):
    """Bytes of the leaves of `tree` that `shardings` keep whole on every device."""
    import jax
    import numpy as np
    return int(sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                   for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)) if s.is_fully_replicated))


def run_modes(out_path, root):
    import jax
    from swinv2_jax.train import metrics, sharding, trainer
    use_fake_data()
    assert jax.device_count() == 8, f'expected 8 fake devices, got {jax.device_count()}'
    out = {'device_count': jax.device_count(), 'modes': {}}

    def shardings(tree, mode):   # from the rules and shapes alone, as benchmarks/memory.py does
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
        return sharding.state_shardings(shapes, sharding.make_mesh(), mode)
    for mode in MODES:
        workdir = os.path.join(root, mode)
        t = time.perf_counter()
        state = trainer.train_and_evaluate(make_config(sharding=mode), workdir)
        seconds = round(time.perf_counter() - t, 1)
        first = metrics.read_metrics(workdir)[0]
        spec = lambda t: [str(s.sharding.spec) for s in jax.tree.leaves(t)]  # noqa: E731
        out['modes'][mode] = dict(
            losses=losses(workdir), record=first, step=int(state.step), seconds=seconds,
            params_replicated_after_training=all(x.sharding.is_fully_replicated
                                                 for x in jax.tree.leaves(state.params)),
            ema_replicated_after_training=all(x.sharding.is_fully_replicated
                                              for x in jax.tree.leaves(state.ema_params)),
            opt_state_sharded_leaves=sum(not x.sharding.is_fully_replicated
                                         for x in jax.tree.leaves(state.opt_state)),
            params_sharded_leaves=sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params)),
            params_specs_match_ema=spec(state.params) == spec(state.ema_params),
            # what the rules keep whole (small or indivisible leaves), for the 1/8 bound
            params_replicated_leaf_bytes=replicated_leaf_bytes(state.params, jax.tree.map(lambda x: x.sharding, state.params)),
            opt_state_replicated_leaf_bytes=replicated_leaf_bytes(
                state.opt_state, jax.tree.map(lambda x: x.sharding, state.opt_state)),
            params_bytes_per_device_now=sharding.bytes_per_device(state.params),
            opt_state_bytes_per_device_now=sharding.bytes_per_device(state.opt_state),
            predicted_params_bytes_per_device=sharding.sharded_bytes_per_device(
                state.params, shardings(state, mode).params),
            predicted_opt_state_bytes_per_device=sharding.sharded_bytes_per_device(
                state.opt_state, shardings(state, mode).opt_state))

    # The zero1 run's step-2 checkpoint (saved on 8 devices) restored on 4 devices under fsdp.
    src = os.path.join(root, 'zero1', 'checkpoints')
    workdir = os.path.join(root, 'restored_on_4')
    shutil.copytree(src, os.path.join(workdir, 'checkpoints'))
    shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
    shutil.copy(os.path.join(root, 'zero1', metrics.METRICS_FILE), workdir)
    make_mesh = sharding.make_mesh
    sharding.make_mesh = lambda devices=None: make_mesh(jax.devices()[:4])
    try:
        state = trainer.train_and_evaluate(make_config(sharding='fsdp'), workdir)
    finally:
        sharding.make_mesh = make_mesh
    out['restored_on_4'] = dict(
        losses=losses(workdir), step=int(state.step),
        devices=sorted({d.id for x in jax.tree.leaves(state) for d in x.sharding.device_set}),
        opt_state_sharded_leaves=sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.opt_state)))
    with open(out_path, 'w') as f:
        json.dump(out, f)


def run_train_py(argv):
    use_fake_data()
    import train
    from absl import app
    app.run(lambda a: sys.exit(train.main(a)), argv=[os.path.join(REPO, 'train.py')] + argv)


if __name__ == '__main__':
    if sys.argv[1] == 'modes':
        run_modes(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == 'train_py':
        run_train_py(sys.argv[2:])
    else:
        raise SystemExit(f'unknown command {sys.argv[1]!r}: modes or train_py')
