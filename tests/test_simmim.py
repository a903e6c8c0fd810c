"""SimMIM: model parity with Hugging Face, the loss and target, the mask generator and
its place in the input pipeline, PyTorch checkpoints, and training / fine-tuning through train.py.

Tiny models on CPU; the trainer runs use the embedded digits at 32x32 (configs/*:runlocal).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import traverse_util
# before TensorFlow: importing transformers' torch._dynamo after TF segfaults in this environment
from transformers import Swinv2Config, Swinv2ForMaskedImageModeling

from swinv2_jax import convert
from swinv2_jax.convert_simmim import export_simmim_weights, load_simmim_weights
from swinv2_jax.models import abstract_variables, create_model
from swinv2_jax.models.simmim import (SimMIM, create_simmim, masked_l1_loss, normalized_target,
                                      pixel_shuffle)
from test_train import load_config
from torch_refs import assert_close, nchw, randomize_, to_torch_state

tf = pytest.importorskip('tensorflow')

# 64x64, patch 4 (16x16 tokens), three stages (stride 16), windows 4 with pretrained windows 2:
# the CPB's window-transfer path is on.
ENC = dict(img_size=64, patch_size=4, embed_dim=16, depths=(1, 2, 1), num_heads=(1, 2, 4), window_size=4,
           pretrained_window_sizes=(2, 2, 2), drop_path_rate=0.0, use_mask_token=True, num_classes=0)


def flat(tree):
    return {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def zeros_params(model):
    """Stand-in initial parameters (init_from's target) without running the model's init."""
    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract_variables(model)['params'])


pytestmark = pytest.mark.usefixtures('compilation_cache')   # tests/conftest.py


# ----------------------------------------------------------------------------------------------
# Model pieces against PyTorch / numpy
# ----------------------------------------------------------------------------------------------

def test_pixel_shuffle_matches_torch_channel_order():
    x = np.random.RandomState(0).randn(2, 3, 5, 3 * 4 * 4).astype(np.float32)
    ref = torch.nn.PixelShuffle(4)(nchw(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 4)), ref)


def _norm_target_direct(x: np.ndarray, window: int) -> np.ndarray:
    """The official norm_targets written out pixel by pixel (float64)."""
    b, h, w, c = x.shape
    r = window // 2
    out = np.empty_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            patch = x[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1, :].astype(np.float64)
            n = patch.shape[1] * patch.shape[2]
            mean = patch.mean(axis=(1, 2))
            var = np.maximum((patch ** 2).mean(axis=(1, 2)) - mean ** 2, 0.0) * n / (n - 1)
            out[:, i, j, :] = (x[:, i, j, :] - mean) / np.sqrt(var + 1e-6)
    return out


@pytest.mark.parametrize('shape,window', [((2, 12, 10, 3), 5), ((1, 20, 20, 3), 47)])
def test_normalized_target_matches_direct_computation(shape, window):
    # window 47 on 20x20: every window is clipped by the image (count_include_pad=False)
    x = np.random.RandomState(1).rand(*shape).astype(np.float32) * 2 - 0.5
    got = np.asarray(normalized_target(jnp.asarray(x), window))
    want = _norm_target_direct(x, window)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    assert np.abs(got).max() > 0.5
    with pytest.raises(ValueError, match='odd'):
        normalized_target(jnp.asarray(x), 4)


def test_loss_counts_only_masked_pixels():
    rng = np.random.RandomState(2)
    x = rng.randn(2, 8, 8, 3).astype(np.float32)
    rec = rng.randn(2, 8, 8, 3).astype(np.float32)
    m = (rng.rand(2, 8, 8) > 0.5).astype(np.float32)
    loss = float(masked_l1_loss(x, rec, m))
    want = (np.abs(x - rec) * m[..., None]).sum() / (m.sum() + 1e-5) / 3
    assert loss == pytest.approx(want, rel=1e-6)
    # rewriting the reconstruction where the mask is 0 changes nothing; where it is 1 it does
    other = np.where(m[..., None] > 0, rec, rec + 100.0)
    assert float(masked_l1_loss(x, other, m)) == loss
    moved = np.where(m[..., None] > 0, rec + 1.0, rec)
    assert float(masked_l1_loss(x, moved, m)) != loss
    assert float(masked_l1_loss(x, rec, np.zeros_like(m))) == 0.0


# ----------------------------------------------------------------------------------------------
# Parity with Hugging Face Swinv2ForMaskedImageModeling, and checkpoints
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def hf_case():
    model = create_simmim(create_model('swinv2_tiny_window8_256', **ENC))
    config = Swinv2Config(image_size=64, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 2, 1],
                          num_heads=[1, 2, 4], window_size=4, pretrained_window_sizes=[2, 2, 2],
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
                          layer_norm_eps=1e-5, hidden_act='gelu', encoder_stride=model.stride)
    torch.manual_seed(0)
    hf = randomize_(Swinv2ForMaskedImageModeling(config).eval(), seed=1)
    with torch.no_grad():   # HF starts it at zero: a wrong mask placement would go unseen
        hf.swinv2.embeddings.mask_token.normal_(0.0, 0.5)
    x = np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)
    blocks = np.zeros((2, 4, 4), np.int32)       # mask patch 16 = 4x4 tokens; 10 of 16 blocks
    for b in range(2):
        blocks[b].flat[np.random.RandomState(b).permutation(16)[:10]] = 1
    tokens = blocks.repeat(4, 1).repeat(4, 2)
    with torch.no_grad():
        out = hf(pixel_values=nchw(x), bool_masked_pos=torch.from_numpy(tokens.reshape(2, -1).astype(bool)))
    variables = load_simmim_weights(hf.state_dict(), model)
    return dict(model=model, hf=hf, config=config, x=x, blocks=blocks, tokens=tokens, variables=variables,
                ref_rec=out.reconstruction.numpy().transpose(0, 2, 3, 1), ref_loss=float(out.loss))


def test_reconstruction_and_loss_match_hugging_face(hf_case):
    model, variables, x = hf_case['model'], hf_case['variables'], jnp.asarray(hf_case['x'])
    apply = jax.jit(model.apply)
    loss, rec = apply(variables, x, jnp.asarray(hf_case['tokens']))
    err = assert_close(rec, hf_case['ref_rec'], 1e-4, 'reconstruction')
    rel = abs(float(loss) - hf_case['ref_loss']) / hf_case['ref_loss']
    assert rel < 1e-4, rel
    print(f'HF parity: reconstruction rel err {err:.2e}, loss {float(loss):.6f} vs {hf_case["ref_loss"]:.6f}')
    # the block-grid mask of the input pipeline is the same mask (the model expands it)
    np.testing.assert_array_equal(np.asarray(model.apply(variables, jnp.asarray(hf_case['blocks']),
                                                         method=SimMIM.token_mask)), hf_case['tokens'])
    # the mask matters (the token is used) and the loss is over the masked pixels only
    loss_none, rec_none = apply(variables, x, jnp.zeros_like(jnp.asarray(hf_case['tokens'])))
    assert float(loss_none) == 0.0 and not np.allclose(np.asarray(rec_none), np.asarray(rec))
    rec_err = np.abs(np.asarray(x) - np.asarray(rec)).mean(-1)
    pix = hf_case['tokens'].repeat(4, 1).repeat(4, 2)
    assert float(loss) == pytest.approx((rec_err * pix).sum() / pix.sum(), rel=1e-5)


def test_export_to_hugging_face_loads_strictly_and_round_trips(hf_case):
    model, variables = hf_case['model'], hf_case['variables']
    fresh = Swinv2ForMaskedImageModeling(hf_case['config']).eval()
    fresh.load_state_dict(to_torch_state(export_simmim_weights(variables, model, 'hf')), strict=True)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), hf_case['hf'].state_dict()[k].numpy(), err_msg=k)


def _official_state_dict(variables, model, rpe_alias=True):
    """An official SimMIM training checkpoint: {'model': ...} with `encoder.`/`decoder.0.` names,
    the official buffers, and (older checkpoints) `rpe_mlp` for `cpb_mlp`."""
    sd = export_simmim_weights(variables, model, 'simmim')
    if rpe_alias:
        sd = {k.replace('.cpb_mlp.', '.rpe_mlp.'): v for k, v in sd.items()}
    return {'model': to_torch_state(sd), 'epoch': 799}


def test_official_simmim_state_dict_loads_for_pretraining_and_finetuning(hf_case, tmp_path):
    model, variables = hf_case['model'], hf_case['variables']
    sd = _official_state_dict(variables, model)
    assert 'encoder.layers.0.blocks.0.attn.rpe_mlp.0.weight' in sd['model']
    assert 'encoder.mask_token' in sd['model'] and 'decoder.0.weight' in sd['model']
    torch.save(sd, tmp_path / 'simmim.pth')
    again = load_simmim_weights(str(tmp_path / 'simmim.pth'), model)
    a, b = flat(variables['params']), flat(again['params'])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # fine-tuning: the encoder alone, into a classifier at another window size (CPB transfer)
    clf = create_model('swinv2_tiny_window8_256', **{**ENC, 'use_mask_token': False, 'num_classes': 5,
                                                     'window_size': 8, 'pretrained_window_sizes': (4, 4, 4)})
    enc = convert.load_torch_weights(sd, clf.clone(num_classes=0))['params']
    enc_flat, src = flat(enc), flat(variables['params']['encoder'])
    assert 'mask_token' not in enc_flat and len(enc_flat) == len(src) - 1
    for k, v in enc_flat.items():
        np.testing.assert_array_equal(v, src[k], err_msg=k)
    # ... the same through init_from (what train.py does with --config.init_from=FILE)
    from swinv2_jax.train import init_from
    target = zeros_params(clf)
    params, report = init_from.load_pretrained(str(tmp_path / 'simmim.pth'), clf, target)
    assert report.kind == 'torch' and [r.split(' ')[0] for r in report.reinitialised] == ['head/bias', 'head/kernel']
    np.testing.assert_array_equal(np.asarray(params['layers_2']['blocks_0']['attn']['qkv']['kernel']),
                                  src['layers_2/blocks_0/attn/qkv/kernel'])
    # ... Hugging Face's masked-image-modelling checkpoint too (its decoder is left out)
    hf_enc = flat(convert.load_torch_weights(hf_case['hf'].state_dict(), clf.clone(num_classes=0))['params'])
    for k, v in hf_enc.items():
        np.testing.assert_array_equal(v, src[k], err_msg=k)

    # what cannot load says what is wrong and what to do
    no_decoder = {k: v for k, v in sd['model'].items() if not k.startswith('decoder.')}
    with pytest.raises(ValueError, match=r'(?s)decoder\.0\.weight: missing.*load_torch_weights or init_from'):
        load_simmim_weights(no_decoder, model)
    two_stage = create_simmim(create_model('swinv2_tiny_window8_256', **{**ENC, 'depths': (1, 2),
                                                                         'num_heads': (1, 2),
                                                                         'window_size': 4,
                                                                         'pretrained_window_sizes': (2, 2)}))
    with pytest.raises(ValueError, match='decoder.0.weight: checkpoint'):
        load_simmim_weights(sd, two_stage)
    with pytest.raises(ValueError, match='no SimMIM mask token or decoder'):
        load_simmim_weights(convert.export_torch_weights(
            {'params': variables['params']['encoder']}, model.encoder, 'timm'), model)


# ----------------------------------------------------------------------------------------------
# Mask generator and the input pipeline
# ----------------------------------------------------------------------------------------------

def test_mask_generator_official_parameters():
    from swinv2_jax.data.simmim_mask import MaskGenerator
    gen = MaskGenerator(192, 32, 4, 0.6)
    assert gen.grid == (6, 6) and gen.mask_count == 22 and gen.scale == 8
    token = gen(np.random.default_rng(0))
    assert token.shape == (48, 48) and token.sum() == 22 * 64
    blocks = token.reshape(6, 8, 6, 8)
    assert (blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3))).all()      # constant 8x8 blocks
    # TensorFlow draw (the pipeline's): exact count, a function of the seed, uniform over blocks
    draws = np.stack([gen.tf_block_mask(tf.constant([7, s], tf.int64)).numpy() for s in range(400)])
    assert (draws.sum(axis=(1, 2)) == 22).all() and set(np.unique(draws)) == {0, 1}
    np.testing.assert_array_equal(gen.tf_block_mask(tf.constant([7, 3], tf.int64)).numpy(), draws[3])
    assert len({d.tobytes() for d in draws}) == 400
    freq = draws.mean(axis=0)                          # each block masked with p = 22/36
    assert np.abs(freq - 22 / 36).max() < 0.1
    with pytest.raises(ValueError, match='does not divide the 200x200 image'):
        MaskGenerator(200, 32, 4)
    with pytest.raises(ValueError, match='not a multiple of the model patch size 5'):
        MaskGenerator(192, 32, 5)


def _digits_simmim_config(**changes):
    c = load_config('simmim_digits', 'runlocal')
    for k, v in changes.items():
        c[k] = v
    return c


def test_pipeline_masks_are_deterministic_resumable_and_per_example():
    from swinv2_jax import data
    c = _digits_simmim_config()
    it = data.train_iterator(c, (32, 32), 16)
    batches = [next(it) for _ in range(4)]
    for b in batches:
        assert b['mim_mask'].shape == (16, 4, 4) and b['mim_mask'].dtype == np.int32
        assert (b['mim_mask'].sum(axis=(1, 2)) == 10).all()                  # ceil(16 * 0.6)
    assert not np.array_equal(batches[0]['mim_mask'], batches[1]['mim_mask'])
    resumed = next(data.train_iterator(c, (32, 32), 16, start_step=3))
    np.testing.assert_array_equal(resumed['mim_mask'], batches[3]['mim_mask'])
    np.testing.assert_array_equal(resumed['image'], batches[3]['image'])
    other = next(data.train_iterator(_digits_simmim_config(seed=1), (32, 32), 16))
    assert not np.array_equal(other['mim_mask'], batches[0]['mim_mask'])
    # two processes: each its own masks, the same as before for the same (step, process layout)
    p1 = next(data.train_iterator(c, (32, 32), 8, process_index=1, process_count=2))
    assert p1['mim_mask'].shape == (8, 4, 4)
    np.testing.assert_array_equal(
        p1['mim_mask'], next(data.train_iterator(c, (32, 32), 8, process_index=1, process_count=2))['mim_mask'])

    # evaluation: a mask per example, whatever the batch size; padding has none
    def eval_masks(batch_size):
        out = [b['mim_mask'][b['mask'] > 0] for b in data.eval_iterator(c, 'test', (32, 32), batch_size)]
        return np.concatenate(out)
    a, b = eval_masks(320), eval_masks(64)
    assert a.shape == (300, 4, 4) and (a.sum(axis=(1, 2)) == 10).all()
    np.testing.assert_array_equal(a, b)
    # a classification config yields no mask
    assert 'mim_mask' not in next(data.train_iterator(load_config('digits', 'runlocal'), (32, 32), 16))


# ----------------------------------------------------------------------------------------------
# Training through the trainer, resuming, fine-tuning from it
# ----------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


@pytest.fixture(scope='module')
def simmim_run(tmp_path_factory):
    """An uninterrupted 4-step SimMIM run on digits (configs/simmim_digits.py:runlocal)."""
    from swinv2_jax.train import trainer
    workdir = str(tmp_path_factory.mktemp('simmim_full'))
    state = trainer.train_and_evaluate(_digits_simmim_config(), workdir)
    return workdir, state


def test_simmim_run_trains_evaluates_and_resumes(simmim_run, tmp_path, monkeypatch):
    from swinv2_jax.train import checkpointing, metrics, trainer
    workdir, full = simmim_run
    records = metrics.read_metrics(workdir)
    train = [r for r in records if 'loss' in r and 'lr' in r]
    evals = [r for r in records if 'eval_loss' in r]
    assert [r['step'] for r in train] == [1, 2, 3, 4] and all(math.isfinite(r['loss']) for r in train)
    assert len(evals) == 1 and evals[0]['eval_examples'] == 300 and 0 < evals[0]['eval_loss'] < 5
    assert set(flat(full.params)) >= {'encoder/mask_token', 'decoder/kernel', 'decoder/bias'}
    meta = checkpointing.Checkpointer(workdir, read_only=True).restore_meta()
    assert meta['objective'] == 'simmim' and meta['model']['use_mask_token'] is True

    check = trainer._check_finite

    def die_after_step_3(step, scalars, ckpt):
        check(step, scalars, ckpt)
        if step == 3:
            raise Killed
    monkeypatch.setattr(trainer, '_check_finite', die_after_step_3)
    with pytest.raises(Killed):
        trainer.train_and_evaluate(_digits_simmim_config(), str(tmp_path))
    monkeypatch.setattr(trainer, '_check_finite', check)
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 2
    resumed = trainer.train_and_evaluate(_digits_simmim_config(), str(tmp_path))
    a, b = flat(full.params), flat(resumed.params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = lambda rs: [{k: v for k, v in r.items() if 'per_sec' not in k and 'seconds' not in k} for r in rs]
    assert strip(metrics.read_metrics(str(tmp_path))) == strip(records)


def test_finetune_from_simmim_run_at_another_window(simmim_run, tmp_path):
    from swinv2_jax.train import init_from, objectives, trainer
    workdir, pre = simmim_run
    c = load_config('simmim_digits_finetune', 'runlocal')       # window 2 (pre-training: 4)
    c.init_from = workdir
    model = objectives.build_model(c, 10)
    assert model.window_size[0] == (2, 2) and model.num_classes == 10
    target = zeros_params(model)
    params, report = init_from.load_pretrained(workdir, model, target)
    assert report.kind == 'simmim-training'
    assert sorted(r.split(' ')[0] for r in report.reinitialised) == ['head/bias', 'head/kernel']
    src, got = flat(pre.params), flat(params)
    for k, v in got.items():
        if not k.startswith('head/'):
            np.testing.assert_array_equal(v, src['encoder/' + k], err_msg=k)
    assert len(got) == len([k for k in src if k.startswith('encoder/')]) - 1 + 2   # - mask token + head
    # continued pre-training: a SimMIM model takes all of a SimMIM run or file
    mim = objectives.build_model(_digits_simmim_config(), 10)
    mim_target = zeros_params(mim)
    from safetensors.numpy import save_file
    save_file(export_simmim_weights({'params': pre.params}, mim, 'simmim'), str(tmp_path / 'mim.safetensors'))
    for source, kind in ((workdir, 'simmim-training'), (str(tmp_path / 'mim.safetensors'), 'torch')):
        params, report = init_from.load_pretrained(source, mim, mim_target)
        assert report.kind == kind and not report.reinitialised and not report.dropped
        for k, v in flat(params).items():
            np.testing.assert_array_equal(v, src[k], err_msg=k)
    # and it trains (layer decay on), from the config as train.py would run it
    tuned = trainer.train_and_evaluate(c, str(tmp_path))
    assert int(tuned.step) == c.num_train_steps
    assert np.isfinite(flat(tuned.params)['head/kernel']).all()


def test_official_pretrain_config_runs_under_mock_imagenet(tmp_path):
    """configs/simmim_pretrain.py:base,runlocal (bilinear crops, multistep lr) on mocked ImageNet."""
    import tensorflow_datasets as tfds
    from swinv2_jax.train import metrics, trainer
    c = load_config('simmim_pretrain', 'base,runlocal')
    with tfds.testing.mock_data(num_examples=8):
        state = trainer.train_and_evaluate(c, str(tmp_path))
    records = metrics.read_metrics(str(tmp_path))
    train = [r for r in records if 'lr' in r]
    assert int(state.step) == 2 and all(math.isfinite(r['loss']) for r in train)
    # warm-up (1 update) from warmup_lr, then the epoch-1 milestone: lr x 0.1 (per 512 -> x 8 / 512)
    assert train[0]['lr'] == pytest.approx(5e-7 * 8 / 512) and train[1]['lr'] == pytest.approx(1e-5 * 8 / 512)
    assert [r['eval_examples'] for r in records if 'eval_loss' in r] == [8]


# ----------------------------------------------------------------------------------------------
# Configs and the schedule
# ----------------------------------------------------------------------------------------------

def test_configs_load_and_official_values():
    from swinv2_jax.train import objectives
    from swinv2_jax.train.objectives import simmim as simmim_objective
    pre = load_config('simmim_pretrain', 'base')
    assert pre.objective == 'simmim' and pre.model == 'swinv2_base_window12_192'
    assert (pre.simmim.mask_patch_size, pre.simmim.mask_ratio, pre.simmim.norm_target_window) == (32, 0.6, 47)
    assert pre.aug.crop_scale == (0.67, 1.0) and pre.optim.lr * pre.batch_size / 512 == pytest.approx(4e-4)
    assert (pre.optim.weight_decay, pre.optim.clip_grad, pre.optim.schedule) == (0.05, 5.0, 'multistep')
    model = simmim_objective.build_model(pre)
    assert model.img_size == (192, 192) and model.stride == 32 and model.encoder.window_size[0] == (12, 12)
    ft = load_config('simmim_finetune', 'base')
    clf = objectives.build_model(ft, 1000)
    assert clf.img_size == (224, 224) and clf.window_size[0] == (14, 14) and clf.window_size[3] == (14, 14)
    assert clf.pretrained_window_sizes == ((12, 12), (12, 12), (12, 12), (6, 6))
    assert ft.optim.layer_decay == 0.75 and ft.init_from_required
    for name, arg in (('simmim_pretrain', 'base,runlocal'), ('simmim_finetune', 'base,runlocal'),
                      ('simmim_digits', None), ('simmim_digits_finetune', None),
                      ('simmim_digits_finetune', 'scratch')):
        load_config(name, arg)
    assert not load_config('simmim_digits_finetune', 'scratch').init_from_required
    with pytest.raises(ValueError, match='unknown objective'):
        objectives.build_model(ml_collections.ConfigDict(dict(objective='mae')), 10)
    bad = load_config('simmim_digits', 'runlocal')
    bad.simmim.mask_patch_size = 6
    with pytest.raises(ValueError, match='not a multiple of the model patch size 4'):
        simmim_objective.build_model(bad)
    bad = load_config('simmim_digits', 'runlocal')
    bad.optim.layer_decay = 0.75
    with pytest.raises(ValueError, match='layer_decay=1.0'):
        simmim_objective.build_model(bad)


def test_multistep_schedule_as_timm():
    from swinv2_jax.train import optim
    sched = optim.make_multistep_schedule(1e-3, 1e-6, warmup=10, milestones=[30, 50], gamma=0.1)
    assert float(sched(0)) == pytest.approx(1e-6)
    assert float(sched(5)) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert float(sched(10)) == pytest.approx(1e-3) and float(sched(29)) == pytest.approx(1e-3)
    assert float(sched(30)) == pytest.approx(1e-4) and float(sched(50)) == pytest.approx(1e-5)
