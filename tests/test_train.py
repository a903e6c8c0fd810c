"""Training loop tests (swinv2_jax.train, train.py, configs/): tiny models, a few steps, CPU.

The loop's mechanics (accumulation, resume, NaN, init_from) run on `FakeData`, a synthetic
stand-in with the contract's API (docs/training_contract.md), so they are fast and independent of
the input pipeline; the ImageNet-config step and the end-to-end command use swinv2_jax.data.
"""
from __future__ import annotations

import collections
import importlib
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from swinv2_jax.models import create_model
from swinv2_jax.train import (checkpointing, common, config_lib, init_from, metrics, objectives, optim, sharding,
                              trainer)
from swinv2_jax.train.objectives import classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures('compilation_cache')   # tests/conftest.py


def load_config(name, arg=None) -> ml_collections.ConfigDict:
    return importlib.import_module(f'configs.{name}').get_config(arg)   # configs/ is a package


# ----------------------------------------------------------------------------------------------
# A synthetic input pipeline with the contract's API
# ----------------------------------------------------------------------------------------------

DatasetInfo = collections.namedtuple('DatasetInfo', 'num_classes num_train_examples num_eval_examples')


class FakeData:
    """Learnable synthetic images; the batch at step s is a function of (seed, s) only."""
    num_classes, num_train, num_eval = 4, 32, 12

    def __init__(self, nan_at_step=None):
        self.nan_at_step = nan_at_step

    def _examples(self, n, hw, seed):
        rng = np.random.RandomState(seed)
        labels = rng.randint(0, self.num_classes, n).astype(np.int32)
        images = rng.normal(size=(n, *hw, 3)).astype(np.float32) * 0.5
        return images + labels[:, None, None, None] * 0.5, labels

    def dataset_info(self, config):
        return DatasetInfo(self.num_classes, self.num_train, {'validation': self.num_eval})

    def train_iterator(self, config, image_size, local_batch_size, start_step=0, process_index=0,
                       process_count=1):
        images, labels = self._examples(self.num_train, image_size, 0)
        per_epoch = self.num_train // (local_batch_size * process_count)
        step = start_step
        while True:
            epoch, i = divmod(step, per_epoch)
            order = np.random.RandomState(config.seed * 1000 + epoch).permutation(self.num_train)
            lo = (i * process_count + process_index) * local_batch_size
            idx = order[lo:lo + local_batch_size]
            image = images[idx].copy()
            if step == self.nan_at_step:
                image[:] = np.nan
            yield {'image': image, 'label': labels[idx]}
            step += 1

    def eval_names(self, config):
        return ['validation']

    def eval_iterator(self, config, name, image_size, local_batch_size, process_index=0, process_count=1):
        images, labels = self._examples(self.num_eval, image_size, 1)
        for lo in range(0, self.num_eval, local_batch_size):
            image, label = images[lo:lo + local_batch_size], labels[lo:lo + local_batch_size]
            pad = local_batch_size - len(label)
            yield {'image': np.pad(image, ((0, pad), (0, 0), (0, 0), (0, 0))), 'label': np.pad(label, (0, pad)),
                   'mask': np.pad(np.ones(len(label), np.float32), (0, pad))}


TINY = dict(img_size=16, patch_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=2,
            drop_path_rate=0.1)


def tiny_config(**changes) -> ml_collections.ConfigDict:
    c = load_config('digits', 'runlocal')
    c.model_overrides = dict(TINY)
    c.dataset = 'fake'
    c.eval_split = 'validation'
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 8
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 3
    c.log_every_steps = 2
    c.optim.warmup_steps = 2
    c.optim.ema_decay = 0.5
    for k, v in changes.items():
        target = c
        *parents, leaf = k.split('.')
        for p in parents:
            target = target[p]
        target[leaf] = v
    return c


@pytest.fixture
def fake_data(monkeypatch):
    data = FakeData()
    monkeypatch.setattr(trainer, '_data', lambda: data)
    return data


def flat_params(state_or_params):
    params = getattr(state_or_params, 'params', state_or_params)
    return {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}


# ----------------------------------------------------------------------------------------------
# Optimizer pieces
# ----------------------------------------------------------------------------------------------

def tiny_abstract_params(num_classes=5, depths=(2, 2, 2), extra_norm_every=0):
    model = create_model('swinv2_tiny_window8_256', img_size=32, patch_size=2, embed_dim=12, depths=depths,
                         num_heads=(1, 2, 4), window_size=4, num_classes=num_classes,
                         extra_norm_every=extra_norm_every)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return model, jax.eval_shape(model.init, jax.random.key(0), x)['params']


def test_weight_decay_mask_exact_leaves():
    _, params = tiny_abstract_params()
    mask = traverse_util.flatten_dict(optim.decay_mask(params))
    decayed = sorted('/'.join(p) for p, m in mask.items() if m)
    # kernels of the patch embedding, qkv, proj, mlp, merging and head: nothing else
    expected = ['head/kernel', 'patch_embed/proj/kernel']
    for i, depth in enumerate((2, 2, 2)):
        if i > 0:
            expected.append(f'layers_{i}/downsample/reduction/kernel')
        for j in range(depth):
            b = f'layers_{i}/blocks_{j}'
            expected += [f'{b}/attn/qkv/kernel', f'{b}/attn/proj/kernel', f'{b}/mlp/fc1/kernel',
                         f'{b}/mlp/fc2/kernel']
    assert decayed == sorted(expected)
    not_decayed = {'/'.join(p) for p, m in mask.items() if not m}
    assert 'layers_0/blocks_0/attn/logit_scale' in not_decayed          # 3-D, excluded by name
    assert 'layers_0/blocks_0/attn/cpb_mlp_0/kernel' in not_decayed     # 2-D CPB meta network
    assert 'layers_0/blocks_0/attn/cpb_mlp_2/kernel' in not_decayed
    assert 'layers_0/blocks_0/attn/q_bias' in not_decayed
    assert 'layers_1/downsample/norm/scale' in not_decayed


def test_weight_decay_applies_only_to_masked_leaves():
    params = {'w': jnp.ones((2, 2)), 'bias': jnp.ones((2,)), 'attn': {'logit_scale': jnp.ones((2, 1, 1))}}
    c = config_lib.base_optim()
    c.update(dict(lr=512 * 0.1, warmup_lr=512 * 0.1, min_lr=512 * 0.1, warmup_steps=0, clip_grad=0.0,
                  weight_decay=0.5))
    tx, _ = optim.make_optimizer(c, params, (1,), 10, 1, 1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates['w'], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    assert float(jnp.abs(updates['bias']).max()) == 0.0
    assert float(jnp.abs(updates['attn']['logit_scale']).max()) == 0.0


def test_layer_ids_follow_official_get_swin_layer():
    depths = (2, 2, 6, 2)
    lid = lambda *p: optim.layer_id(tuple(p), depths)
    assert lid('patch_embed', 'proj', 'kernel') == 0
    assert lid('patch_embed', 'norm', 'scale') == 0
    assert lid('layers_0', 'blocks_0', 'attn', 'qkv', 'kernel') == 1
    assert lid('layers_0', 'blocks_1', 'mlp', 'fc1', 'kernel') == 2
    # merging at the start of stage 1 is the official layers.0.downsample: id of stage 0's last block
    assert lid('layers_1', 'downsample', 'reduction', 'kernel') == 2
    assert lid('layers_1', 'blocks_0', 'norm1', 'scale') == 3
    assert lid('layers_2', 'downsample', 'norm', 'bias') == 4
    assert lid('layers_2', 'blocks_5', 'attn', 'logit_scale') == 10
    assert lid('layers_2', 'extra_norm_5', 'scale') == 10
    assert lid('layers_3', 'downsample', 'reduction', 'kernel') == 10
    assert lid('layers_3', 'blocks_1', 'mlp', 'fc2', 'bias') == 12
    assert lid('norm', 'scale') == 13 and lid('head', 'kernel') == 13


def test_layer_decay_scales():
    _, params = tiny_abstract_params(depths=(2, 2, 2))        # 6 blocks: num_layers = 8
    scales = traverse_util.flatten_dict(optim.layer_scales(params, (2, 2, 2), 0.5))
    assert scales[('head', 'kernel')] == 1.0
    assert scales[('norm', 'scale')] == 1.0
    assert scales[('patch_embed', 'proj', 'kernel')] == 0.5 ** 7
    assert scales[('layers_0', 'blocks_0', 'attn', 'qkv', 'kernel')] == 0.5 ** 6
    assert scales[('layers_2', 'blocks_1', 'mlp', 'fc1', 'kernel')] == 0.5 ** 1
    assert scales[('layers_1', 'downsample', 'reduction', 'kernel')] == 0.5 ** 5   # with block id 2

    # ... and they scale the updates of those leaves (AdamW's first step is lr * sign(g))
    c = config_lib.base_optim()
    c.update(dict(lr=512 * 1e-2, warmup_lr=512 * 1e-2, min_lr=512 * 1e-2, warmup_steps=0, clip_grad=0.0,
                  weight_decay=0.0, layer_decay=0.5))
    real = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    tx, _ = optim.make_optimizer(c, params, (2, 2, 2), 10, 1, 1)
    updates, _ = jax.jit(tx.update)(real, tx.init(real), real)
    flat = traverse_util.flatten_dict(updates)
    for path in [('head', 'kernel'), ('patch_embed', 'proj', 'kernel'), ('layers_2', 'blocks_1', 'mlp', 'fc1', 'kernel')]:
        np.testing.assert_allclose(np.asarray(flat[path]), -1e-2 * scales[path], rtol=1e-4)


def test_schedule_warmup_then_cosine_and_lr_scaling():
    c = config_lib.base_optim()
    c.update(dict(lr=5e-4, warmup_lr=5e-7, min_lr=5e-6, warmup_epochs=2.0))
    lrs = optim.scaled_lrs(c, 1024)                       # per 512 -> x2 at 1024
    assert lrs == pytest.approx({'lr': 1e-3, 'warmup_lr': 1e-6, 'min_lr': 1e-5})
    warm = optim.warmup_steps(c, updates_per_epoch=10)
    assert warm == 20
    sched = optim.make_schedule(lrs['lr'], lrs['warmup_lr'], lrs['min_lr'], warm, 120)
    approx = lambda v: pytest.approx(v, rel=1e-5)            # float32 schedule values
    assert float(sched(0)) == approx(1e-6)
    assert float(sched(10)) == approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert float(sched(20)) == approx(1e-3)
    assert float(sched(70)) == approx(1e-5 + (1e-3 - 1e-5) / 2)   # cosine midpoint
    assert float(sched(120)) == approx(1e-5)
    values = [float(sched(t)) for t in range(121)]
    assert all(a <= b for a, b in zip(values[:20], values[1:21]))        # rising warm-up
    assert all(a >= b for a, b in zip(values[20:], values[21:]))         # falling cosine
    # the recipes' effective learning rates
    for name, arg, lr in [('imagenet1k_scratch', 'tiny', 1e-3), ('imagenet22k_pretrain', 'base', 1e-3),
                          ('imagenet1k_finetune', 'base_384', 4e-5)]:
        cfg = load_config(name, arg)
        assert optim.scaled_lrs(cfg.optim, config_lib.effective_batch(cfg))['lr'] == pytest.approx(lr)


def test_ema_update_and_accumulation_flag():
    ema = {'w': jnp.zeros(3)}
    new = optim.ema_update(ema, {'w': jnp.ones(3)}, 0.9, jnp.asarray(True))
    np.testing.assert_allclose(new['w'], 0.1)
    same = optim.ema_update(ema, {'w': jnp.ones(3)}, 0.9, jnp.asarray(False))
    np.testing.assert_allclose(same['w'], 0.0)
    tx = optax.MultiSteps(optax.sgd(1.0), every_k_schedule=2)
    params = {'w': jnp.ones(3)}
    state = tx.init(params)
    flags = []
    for _ in range(4):
        _, state = tx.update({'w': jnp.ones(3)}, state, params)
        flags.append(bool(optim.did_update(state, 2)))
    assert flags == [False, True, False, True]


def test_grad_accumulation_equals_big_batch():
    model = create_model('swinv2_tiny_window8_256', num_classes=4, **{**TINY, 'depths': (1,), 'num_heads': (1,),
                                                                       'drop_path_rate': 0.0})
    c = config_lib.base_optim()
    c.update(dict(lr=1e-2, warmup_steps=0, weight_decay=0.05, clip_grad=1.0))
    rng = np.random.RandomState(0)
    images = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
    labels = rng.randint(0, 4, 8).astype(np.int32)
    params = model.init(jax.random.key(0), jnp.asarray(images[:1]))['params']
    mix = lambda r, x, y: (x, jax.nn.one_hot(y, 4))

    def run(k, batches):
        c.grad_accum_steps = k
        tx, sched = optim.make_optimizer(c, params, model.depths, 10, 1, 8)
        state = common.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
        step = jax.jit(lambda s, b: classification.train_step(
            s, b, model=model, tx=tx, schedule=sched, mix_fn=mix, seed=0, grad_accum_steps=k, ema_decay=0.0))
        for b in batches:
            state, _ = step(state, b)
        return flat_params(state)

    big = run(1, [{'image': images, 'label': labels}])
    small = run(2, [{'image': images[:4], 'label': labels[:4]}, {'image': images[4:], 'label': labels[4:]}])
    for k in big:
        np.testing.assert_allclose(small[k], big[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.array_equal(big['head/kernel'], np.asarray(params['head']['kernel']))


# ----------------------------------------------------------------------------------------------
# The loop: resume, NaN, init_from
# ----------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


def test_resume_after_kill_is_bitwise_identical(tmp_path, fake_data, monkeypatch):
    c = tiny_config(num_train_steps=8, checkpoint_every_steps=3, eval_every_steps=4)
    full = trainer.train_and_evaluate(c, str(tmp_path / 'full'))
    full_metrics = metrics.read_metrics(str(tmp_path / 'full'))

    # the same run killed once step 7 is done (no final save: the latest checkpoint is step 6)
    check = trainer._check_finite

    def die_after_step_7(step, scalars, ckpt):
        check(step, scalars, ckpt)
        if step == 7:
            raise Killed
    monkeypatch.setattr(trainer, '_check_finite', die_after_step_7)
    with pytest.raises(Killed):
        trainer.train_and_evaluate(c, str(tmp_path / 'killed'))
    assert checkpointing.Checkpointer(str(tmp_path / 'killed')).latest_step() == 6
    monkeypatch.setattr(trainer, '_check_finite', check)
    resumed = trainer.train_and_evaluate(c, str(tmp_path / 'killed'))

    assert int(resumed.step) == int(full.step) == 8
    a, b = flat_params(full), flat_params(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    a, b = flat_params(full.ema_params), flat_params(resumed.ema_params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg='ema ' + k)
    assert any(not np.array_equal(a[k], flat_params(full)[k]) for k in a)     # EMA is not the params
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)),
                                     jax.device_get(full.opt_state), jax.device_get(resumed.opt_state)))
    # metrics.jsonl reads as one run: the same records (timings aside) as the uninterrupted one
    strip = lambda rs: [{k: v for k, v in r.items() if 'per_sec' not in k and 'seconds' not in k} for r in rs]
    assert strip(metrics.read_metrics(str(tmp_path / 'killed'))) == strip(full_metrics)
    assert [r['step'] for r in full_metrics if 'ema_eval_top1' in r] == [4, 8]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, fake_data):
    fake_data.nan_at_step = 4          # the 5th batch (step 4 -> 5) is all NaN
    c = tiny_config(num_train_steps=8, checkpoint_every_steps=2)
    with pytest.raises(trainer.NonFiniteLossError, match=r'non-finite loss=nan .* at step 5: stopping; '
                                                         r'the last good checkpoint is step 4'):
        trainer.train_and_evaluate(c, str(tmp_path))
    ckpt = checkpointing.Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 4
    ckpt.close()
    # the kept checkpoint is finite and a rerun without the bad batch resumes from it
    fake_data.nan_at_step = None
    state = trainer.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 8
    assert all(np.isfinite(v).all() for v in flat_params(state).values())


def test_init_from_converted_with_other_class_count_reinitialises_only_the_head(tmp_path, fake_data):
    from swinv2_jax.checkpoints import save_converted
    source = create_model('swinv2_tiny_window8_256', num_classes=7, **{**TINY, 'window_size': 4})
    variables = source.init(jax.random.key(42), jnp.zeros((1, 16, 16, 3)))
    save_converted(tmp_path / 'src', variables, source, model_name='tiny-source')

    c = tiny_config(num_train_steps=1, init_from=str(tmp_path / 'src'), eval_only=True)
    state = trainer.train_and_evaluate(c, str(tmp_path / 'run'))   # eval_only: params as loaded
    got, src = flat_params(state), flat_params(variables['params'])
    assert got['head/kernel'].shape == (16, 4) and src['head/kernel'].shape == (16, 7)
    for k in got:
        if k.startswith('head/'):
            continue
        np.testing.assert_array_equal(got[k], src[k], err_msg=k)      # window 4 -> 2: same tensors

    # the report names exactly the head as re-initialised
    model = create_model('swinv2_tiny_window8_256', num_classes=4, **TINY)
    target = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
    params, report = init_from.load_pretrained(str(tmp_path / 'src'), model, target)
    assert [r.split(' ')[0] for r in report.reinitialised] == ['head/bias', 'head/kernel']
    assert len(report.transferred) == len(got) - 2 and report.kind == 'converted'
    np.testing.assert_array_equal(np.asarray(params['head']['kernel']), np.asarray(target['head']['kernel']))

    # a mapped head takes the named source rows; a body mismatch is an error naming the leaf
    head_map = tmp_path / 'map.txt'
    head_map.write_text('6\n0\n3\n5\n')
    params, report = init_from.load_pretrained(str(tmp_path / 'src'), model, target, str(head_map))
    np.testing.assert_array_equal(np.asarray(params['head']['kernel']), src['head/kernel'][:, [6, 0, 3, 5]])
    wider = create_model('swinv2_tiny_window8_256', num_classes=4, **{**TINY, 'embed_dim': 16})
    wider_target = wider.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
    with pytest.raises(ValueError, match='patch_embed/proj/kernel'):
        init_from.load_pretrained(str(tmp_path / 'src'), wider, wider_target)


def test_init_from_pytorch_file_and_training_run(tmp_path, fake_data):
    from safetensors.numpy import save_file

    from swinv2_jax import export_torch_weights
    source = create_model('swinv2_tiny_window8_256', num_classes=7, **TINY)
    variables = source.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)))
    save_file({k: np.ascontiguousarray(v) for k, v in export_torch_weights(variables, source, layout='timm').items()},
              str(tmp_path / 'src.safetensors'))
    model = create_model('swinv2_tiny_window8_256', num_classes=4, **TINY)
    target = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
    params, report = init_from.load_pretrained(str(tmp_path / 'src.safetensors'), model, target)
    assert report.kind == 'torch' and [r.split(' ')[0] for r in report.reinitialised] == ['head/bias', 'head/kernel']
    np.testing.assert_array_equal(np.asarray(params['layers_1']['blocks_0']['attn']['qkv']['kernel']),
                                  np.asarray(variables['params']['layers_1']['blocks_0']['attn']['qkv']['kernel']))

    # a training run of this project is a source too (same classes: everything transfers) ...
    run = trainer.train_and_evaluate(tiny_config(num_train_steps=2, checkpoint_every_steps=2), str(tmp_path / 'run'))
    params, report = init_from.load_pretrained(str(tmp_path / 'run'), model, target)
    assert report.kind == 'training' and not report.reinitialised
    for k, v in flat_params(params).items():
        np.testing.assert_array_equal(v, flat_params(run)[k], err_msg=k)
    # ... and fine-tuning from it trains (with EMA: params and EMA start equal, in separate buffers)
    tuned = trainer.train_and_evaluate(tiny_config(num_train_steps=2, init_from=str(tmp_path / 'run')),
                                       str(tmp_path / 'tuned'))      # (the warm-up's first lr is 0)
    assert int(tuned.step) == 2
    assert not np.array_equal(flat_params(tuned)['head/kernel'], flat_params(run)['head/kernel'])


def test_sharding_rules_cover_the_state():
    mesh = sharding.make_mesh()
    tree = {'params': {'a': jax.ShapeDtypeStruct((4, 2), jnp.float32)}, 'opt_state': [jnp.zeros(3)]}
    shard = sharding.state_shardings(tree, mesh, 'replicated')
    assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(shard))
    with pytest.raises(ValueError, match='unknown sharding mode'):
        sharding.state_shardings(tree, mesh, 'zero9')
    assert sharding.check_batch_size(8 * jax.device_count(), mesh) == 8 * jax.device_count()


def test_configs_load_with_every_arg():
    for name, args in [('digits', [None, 'runlocal']),
                       ('imagenet1k_scratch', ['tiny', 'small', 'base', 'tiny,runlocal']),
                       ('imagenet22k_pretrain', ['base', 'large', 'base,runlocal']),
                       ('imagenet1k_finetune', ['base_256', 'base_384', 'large_256', 'large_384', 'base_256,runlocal'])]:
        for arg in args:
            c = load_config(name, arg)
            model = objectives.build_model(c, 10)          # the names and overrides resolve
            assert model.num_classes == 10
    with pytest.raises(ValueError, match='variant'):
        load_config('imagenet1k_scratch', 'huge')
    ft = load_config('imagenet1k_finetune', 'large_384')
    assert ft.init_from_required and ft.aug.crop_pct == 1.0 and ft.optim.layer_decay == 0.9
    m = objectives.build_model(ft, 1000)
    assert m.window_size[0] == (24, 24) and m.pretrained_window_sizes[0] == (12, 12) and m.img_size == (384, 384)
    a1 = load_config('imagenet1k_scratch', 'base')
    assert a1.model_overrides.drop_path_rate == 0.5 and a1.aug.mixup == 0.8 and a1.aug.cutmix == 1.0
    d = load_config('digits')
    assert d.aug.hflip is False and d.aug.mixup == 0.0


# ----------------------------------------------------------------------------------------------
# End to end: an ImageNet config under tfds.testing.mock_data, and train.py killed and resumed
# ----------------------------------------------------------------------------------------------

def test_imagenet_runlocal_one_step_and_eval_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds
    c = load_config('imagenet1k_scratch', 'tiny,runlocal')
    c.num_train_steps = 1
    with tfds.testing.mock_data(num_examples=8):
        state = trainer.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 1
    records = metrics.read_metrics(str(tmp_path))
    train = [r for r in records if 'loss' in r]
    evals = [r for r in records if 'eval_top1' in r]
    assert len(train) == 1 and math.isfinite(train[0]['loss']) and train[0]['lr'] > 0
    assert len(evals) == 1
    final = evals[0]
    assert final['eval_examples'] == 8 and final['eval_imagenet_v2_test_examples'] == 8
    for key in ('eval_top1', 'eval_top5', 'eval_imagenet_v2_test_top1', 'eval_imagenet_v2_test_top5'):
        assert 0.0 <= final[key] <= 1.0
    assert records[0]['num_params'] > 0 and records[0]['opt_state_bytes_per_device'] > 0
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 1
    # TensorBoard event file with the scalars
    from tensorflow.core.util import event_pb2
    import tensorflow as tf
    events = [f for f in os.listdir(tmp_path) if f.startswith('events.out.tfevents')]
    assert len(events) == 1
    tags = {v.tag for rec in tf.data.TFRecordDataset(str(tmp_path / events[0]))
            for v in event_pb2.Event.FromString(rec.numpy()).summary.value}
    assert {'loss', 'lr', 'grad_norm', 'images_per_sec', 'eval_top1', 'eval_top5'} <= tags


TRAIN_PY_FLAGS = ['--config.num_train_steps=150', '--config.checkpoint_every_steps=10',
                  '--config.eval_every_steps=50', '--config.log_every_steps=50', '--config.batch_size=16',
                  '--config.model_overrides.embed_dim=12', '--config.model_overrides.depths=(1,1)',
                  '--config.model_overrides.num_heads=(1,2)']


def _train_py(workdir, env):
    return subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), f'--workdir={workdir}',
                             *TRAIN_PY_FLAGS], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(workdir, proc, above=0, timeout=240):
    """The first complete checkpoint step above `above` of a running train.py."""
    ckpts = os.path.join(workdir, 'checkpoints')
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
        if steps and max(steps) > above:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f'train.py ended ({proc.returncode}) before a checkpoint:\n{proc.stdout.read()[-3000:]}')
        time.sleep(0.05)
    raise AssertionError('no checkpoint in time')


def test_train_py_sigkill_then_the_same_command_ends_as_an_uninterrupted_run(tmp_path):
    """train.py on the real digits data, SIGKILLed after a checkpoint, then run again: the same
    evaluations as an uninterrupted run (run here in-process with the same flags)."""
    from absl import flags
    from ml_collections import config_flags
    fv, argv = flags.FlagValues(), ['train.py'] + TRAIN_PY_FLAGS
    config_flags.DEFINE_config_file('config', os.path.join(REPO, 'configs', 'digits.py'), flag_values=fv,
                                    sys_argv=argv)
    fv(argv)
    trainer.train_and_evaluate(fv.config, str(tmp_path / 'full'))        # fills the compilation cache

    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', TF_CPP_MIN_LOG_LEVEL='2')
    run = tmp_path / 'run'
    proc = _train_py(run, env)
    killed_after = _wait_for_checkpoint(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    proc = _train_py(run, env)                           # the same command again finishes the run
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert f'resumed from {run}/checkpoints at step' in out and killed_after < 150, out[-3000:]
    with open(run / 'train.log') as f:    # train.py keeps its steps' host memory on the CPU
        assert "host memory of the steps kept: {'jax_cpu_enable_async_dispatch': False" in f.read()
    a = [r for r in metrics.read_metrics(str(tmp_path / 'full')) if 'eval_top1' in r]
    b = [r for r in metrics.read_metrics(str(run)) if 'eval_top1' in r]
    strip = lambda rs: [(r['step'], r['eval_top1'], r['eval_loss']) for r in rs]
    assert strip(a) == strip(b) and a[-1]['step'] == 150


def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, fake_data, monkeypatch):
    check = trainer._check_finite

    def sigterm_at_step_4(step, scalars, ckpt):
        check(step, scalars, ckpt)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)         # as a scheduler's preemption would
    monkeypatch.setattr(trainer, '_check_finite', sigterm_at_step_4)
    c = tiny_config(num_train_steps=8, checkpoint_every_steps=100)
    previous = signal.getsignal(signal.SIGTERM)
    state = trainer.train_and_evaluate(c, str(tmp_path))
    assert signal.getsignal(signal.SIGTERM) is previous   # the handler is removed again
    stopped = int(state.step)
    assert 4 <= stopped < 8
    assert checkpointing.latest_step(str(tmp_path)) == stopped
    monkeypatch.setattr(trainer, '_check_finite', check)
    assert int(trainer.train_and_evaluate(c, str(tmp_path)).step) == 8
