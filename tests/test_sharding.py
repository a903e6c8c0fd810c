"""Sharding modes (swinv2_jax/train/sharding.py), checkpoints across meshes, multi-process train.py.

The rules are checked here on abstract meshes; everything that needs several devices runs in
subprocesses with fake CPU devices (tests/sharding_worker.py), because XLA_FLAGS must be set before
JAX starts its backend and this pytest worker may have started it with one device already:
  - one 8-device process trains the same tiny run under 'replicated', 'zero1' and 'fsdp', then
    restores the zero1 run's step-2 checkpoint on 4 devices under fsdp and finishes it;
  - two train.py processes of 4 devices each (jax.distributed on localhost, gloo collectives)
    train the zero1 run again.
About 3 minutes on 2 CPU cores, most of it compiling.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from swinv2_jax.train import config_lib, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'sharding_worker.py')
sys.path.insert(0, os.path.join(REPO, 'tests'))
import sharding_worker  # noqa: E402

RTOL = 1e-5


def mesh_of(n):
    return AbstractMesh((n,), (sharding.DATA_AXIS,), axis_types=(AxisType.Auto,))


def env_with_devices(n):
    """The environment of a subprocess with n fake CPU devices. LLVM optimisation level 0 compiles
    the tiny steps ~40% faster; every comparison is between runs under the same flags."""
    flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
    flags += f' --xla_force_host_platform_device_count={n} --xla_backend_optimization_level=0'
    return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')


def assert_close(a, b, what):
    a, b = ({int(k): v for k, v in d.items()} for d in (a, b))   # JSON made the steps strings
    assert a.keys() == b.keys(), what
    for k in a:
        assert abs(a[k] - b[k]) <= RTOL * abs(b[k]), f'{what}: step {k}: {a[k]} vs {b[k]}'


# ----------------------------------------------------------------------------------------------
# The rules (no devices needed)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape, n, expected', [
    ((96, 64), 8, P('data')),                    # the largest axis
    ((4, 4, 3, 96), 8, P(None, None, None, 'data')),
    ((100, 64), 8, P(None, 'data')),             # the largest is indivisible: the next one
    ((512, 512), 8, P('data')),                  # ties: the first
    ((2048,), 8, P('data')),
    ((12, 100), 8, P()),                         # 1200 elements, no axis divisible by 8
    ((8, 64), 8, P()),                           # 512 < MIN_SHARD_SIZE elements: replicated
    ((), 8, P()),                                # a scalar (optimizer step count)
    ((96, 64), 1, P()),                          # one device: nothing to split
    ((96, 64), 3, P('data')),
])
def test_rule_shards_the_largest_divisible_axis_of_big_leaves(shape, n, expected):
    assert sharding.shard_largest_divisible_axis('x', shape, mesh_of(n)) == expected


def abstract_state():
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    params = {'layers_0': {'qkv': {'kernel': f(64, 192)}, 'norm1': {'scale': f(64)}}}
    return {'step': jax.ShapeDtypeStruct((), jnp.int32), 'params': params, 'ema_params': params,
            'opt_state': ({'count': jax.ShapeDtypeStruct((), jnp.int32)}, {'mu': params, 'nu': params})}


@pytest.mark.parametrize('mode, sharded', [
    ('replicated', set()),
    ('zero1', {'opt_state/1/mu/layers_0/qkv/kernel', 'opt_state/1/nu/layers_0/qkv/kernel'}),
    ('fsdp', {'params/layers_0/qkv/kernel', 'ema_params/layers_0/qkv/kernel',
              'opt_state/1/mu/layers_0/qkv/kernel', 'opt_state/1/nu/layers_0/qkv/kernel'}),
])
def test_modes_shard_their_subtrees_and_keep_small_leaves_whole(mode, sharded):
    specs = sharding.partition_specs(abstract_state(), mesh_of(8), mode)
    flat = {sharding._path_str(p): s for p, s in
            jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, P))}
    assert len(flat) == 10
    assert {k for k, s in flat.items() if s != P()} == sharded
    for k in sharded:
        assert flat[k] == P(None, 'data')                       # (64, 192): the 192 axis


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown sharding mode 'zero2'.*replicated, zero1, fsdp"):
        sharding.partition_specs(abstract_state(), mesh_of(8), 'zero2')


def test_zero1_is_the_default():
    assert config_lib.base_config().sharding == 'zero1'


def test_coordinator_without_process_count_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), f'--workdir={tmp_path}',
                          '--coordinator_address=localhost:1'], cwd=REPO, env=env_with_devices(1),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert '--coordinator_address needs --num_processes and --process_id' in out.stderr + out.stdout


# ----------------------------------------------------------------------------------------------
# Eight devices: the three modes, and a checkpoint restored on four
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def modes(tmp_path_factory):
    root = tmp_path_factory.mktemp('modes')
    out = root / 'out.json'
    proc = subprocess.run([sys.executable, WORKER, 'modes', str(out), str(root)], cwd=REPO,
                          env=env_with_devices(8), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


def test_three_modes_train_with_the_same_losses(modes):
    assert modes['device_count'] == 8
    ref = modes['modes']['replicated']['losses']
    assert len(ref) == sharding_worker.OVERRIDES['num_train_steps']
    for mode in ('zero1', 'fsdp'):
        assert modes['modes'][mode]['step'] == 4
        assert_close(modes['modes'][mode]['losses'], ref, mode)


def test_zero1_and_fsdp_cut_the_bytes_per_device_eightfold(modes):
    repl, zero1, fsdp = (modes['modes'][m] for m in ('replicated', 'zero1', 'fsdp'))
    full_params, full_opt = repl['record']['params_bytes_per_device'], repl['record']['opt_state_bytes_per_device']
    assert (full_params, full_opt) == (repl['record']['params_bytes'], repl['record']['opt_state_bytes'])
    # zero1: optimizer state at most 1/8 plus the leaves the rule keeps whole, which are few
    small = zero1['opt_state_replicated_leaf_bytes']
    assert 0 < small < 0.1 * full_opt
    assert zero1['record']['opt_state_bytes_per_device'] <= full_opt / 8 + small
    assert zero1['record']['params_bytes_per_device'] == full_params
    # ... and the step's pinned out_shardings keep the parameters (and EMA) replicated
    assert zero1['params_replicated_after_training'] and zero1['ema_replicated_after_training']
    assert zero1['opt_state_sharded_leaves'] > 0
    assert zero1['opt_state_bytes_per_device_now'] == zero1['record']['opt_state_bytes_per_device']
    # fsdp: parameters, EMA and optimizer state alike
    small = fsdp['params_replicated_leaf_bytes']
    assert 0 < small < 0.1 * full_params
    assert fsdp['record']['params_bytes_per_device'] <= full_params / 8 + small
    assert fsdp['record']['ema_bytes_per_device'] == fsdp['record']['params_bytes_per_device']
    assert fsdp['record']['opt_state_bytes_per_device'] == zero1['record']['opt_state_bytes_per_device']
    assert fsdp['params_sharded_leaves'] > 0 and fsdp['params_specs_match_ema']
    assert fsdp['params_bytes_per_device_now'] == fsdp['record']['params_bytes_per_device']
    # the figures computed from the shardings alone (the memory benchmark's way) are the measured ones
    for m in modes['modes'].values():
        assert m['predicted_params_bytes_per_device'] == m['record']['params_bytes_per_device']
        assert m['predicted_opt_state_bytes_per_device'] == m['record']['opt_state_bytes_per_device']


def test_checkpoint_saved_on_8_devices_restores_on_4_and_continues(modes):
    restored = modes['restored_on_4']
    assert restored['step'] == 4 and restored['devices'] == [0, 1, 2, 3]
    assert restored['opt_state_sharded_leaves'] > 0           # fsdp on the 4-device mesh
    assert_close(restored['losses'], modes['modes']['zero1']['losses'], 'restored on 4 devices')


# ----------------------------------------------------------------------------------------------
# Two processes on localhost: train.py with jax.distributed, 4 devices each
# ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one_with_eight_devices(modes, tmp_path):
    from swinv2_jax.train import metrics
    workdir, port = tmp_path / 'run', free_port()
    procs = [subprocess.Popen(
        [sys.executable, WORKER, 'train_py', f'--workdir={workdir}', f'--coordinator_address=localhost:{port}',
         '--num_processes=2', f'--process_id={i}', *sharding_worker.train_py_flags(), '--config.sharding=zero1'],
        cwd=REPO, env=env_with_devices(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f'process {i}:\n{out[-4000:]}'
    records = metrics.read_metrics(str(workdir))
    losses = {r['step']: r['loss'] for r in records if 'loss' in r}
    assert [r['step'] for r in records if 'loss' in r] == [1, 2, 3, 4]     # written once: process 0
    assert records[0]['num_processes'] == 2 and records[0]['num_devices'] == 8
    assert records[0]['opt_state_bytes_per_device'] == modes['modes']['zero1']['record']['opt_state_bytes_per_device']
    assert_close(losses, modes['modes']['zero1']['losses'], 'two processes vs one')
    assert 'step 4/4' in outs[0] and 'step 4/4' not in outs[1]              # logs from process 0
    assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']         # saved by both


# ----------------------------------------------------------------------------------------------
# benchmarks/memory.py's state section uses these rules (the SwinV2-G row of the README)
# ----------------------------------------------------------------------------------------------

def test_memory_benchmark_lays_the_state_out_with_the_sharding_rules(tmp_path):
    out = tmp_path / 'memory.json'
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'benchmarks', 'memory.py'), '--model', 'swinv2_tiny_window8_256',
         '--img-size', '64', '--override', 'embed_dim=32', '--override', 'depths=(1,1,1,1)',
         '--override', 'num_heads=(1,2,4,8)', '--window-size', '4', '--batch', '1',
         '--combos', 'full-noseq-f32,none-noseq-f32', '--compile-combos', 'none', '--no-block',
         '--state-devices', '8', '--sharding', 'zero1', '--json-only', '--json-out', str(out)],
        cwd=REPO, env=dict(env_with_devices(1), PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    st = result['state']
    assert st['devices'] == 8 and st['mode'] == 'zero1'
    assert st['params_bytes_per_device'] == st['params_bytes'] == st['grads_bytes_per_device']
    assert st['opt_state_bytes'] / 8 < st['opt_state_bytes_per_device'] < st['opt_state_bytes'] / 6
    fit = result['fit']['full-noseq-f32']
    assert fit['recompute_block'].startswith('stage') and 0 < fit['recompute_block_bytes']
    assert fit['total_bytes'] == (st['params_bytes_per_device'] * 2 + st['opt_state_bytes_per_device']
                                  + fit['saved_residual_bytes'] + fit['constant_bytes'] + fit['recompute_block_bytes'])
    assert fit['fits_a100_40gb']


# Orbax's failed read leaves a tensorstore coroutine to be collected after its event loop closed
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_restoring_a_checkpoint_of_other_shapes_says_what_to_do(tmp_path):
    import gc
    from swinv2_jax.train import checkpointing
    mesh = jax.sharding.Mesh(jax.devices()[:1], (sharding.DATA_AXIS,))
    state = {'step': jnp.zeros((), jnp.int32), 'params': {'w': jnp.ones((4, 8))}}
    ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(1, state, {'model': 'x'})
    other = {'step': jax.ShapeDtypeStruct((), jnp.int32), 'params': {'w': jax.ShapeDtypeStruct((4, 16), jnp.float32)}}
    target = sharding.with_shardings(other, sharding.state_shardings(other, mesh, 'zero1'))
    with pytest.raises(ValueError, match=r'cannot restore the checkpoint at step 1 .* onto 1 devices, '
                                         r"sharding 'zero1'.*same model and optimizer config"):
        ckpt.restore(target, placement="1 devices, sharding 'zero1'")
    restored, meta = ckpt.restore(sharding.with_shardings(
        jax.eval_shape(lambda: state), sharding.state_shardings(state, mesh, 'fsdp')))
    assert meta == {'model': 'x'} and float(restored['params']['w'].sum()) == 32
    ckpt.close()
    gc.collect()   # that coroutine's warning, here rather than in another test
