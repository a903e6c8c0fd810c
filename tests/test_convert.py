"""Weight conversion, the converted-checkpoint format and the `python -m swinv2_jax.convert` CLI.

One small model (embed_dim 16, depths 1-2-1-1, 64x64 images, window 4) is built once in timm with
randomised weights (the zero-initialised res-post-norms would otherwise hide most of the network);
every layout is checked against it.
"""
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

from swinv2_jax.models import create_model, model_fields  # noqa: E402
from swinv2_jax.weights import converted  # noqa: E402
from swinv2_jax.weights.cli import main  # noqa: E402
from swinv2_jax.weights.converted import load_converted, save_converted  # noqa: E402
from swinv2_jax.weights.torch_layouts import (detect_layout, export_torch_weights,  # noqa: E402
                                              load_torch_weights, read_state_dict)
from swinv2_jax.weights.tree_diff import diff_trees  # noqa: E402

NAME = 'swinv2_tiny_window8_256'
SMALL = dict(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), img_size=64, window_size=4)
CLI_SMALL = ['--model', NAME, '--override', 'embed_dim=16', '--override', 'depths=(1,2,1,1)',
             '--override', 'num_heads=(1, 2, 2, 4)', '--img-size', '64', '--window-size', '4']


_forward = jax.jit(lambda model, variables, x: model.apply(variables, x), static_argnums=0)


def forward(model, variables, images):
    # numpy leaves: restored (committed) and freshly loaded arrays then share one compilation
    return np.asarray(_forward(model, jax.tree.map(np.asarray, variables), images))


def assert_close(got, want, rel=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < rel, f'relative error {err:.2e}'


def assert_trees_equal(a, b):
    fa, fb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y), f'{jax.tree_util.keystr(path)} differs'


def new_timm_model(**kw):
    return timm.create_model(NAME, pretrained=False, **{**SMALL, **kw}).eval()


# ----------------------------------------------------------------------------------------------
# Shared fixtures: a randomised timm model, its state dict and logits, the JAX model and weights
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def timm_model():
    torch.manual_seed(0)
    model = new_timm_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'logit_scale' in name:
                p.copy_(math.log(10.0) + 0.3 * torch.randn_like(p))
            elif 'norm' in name and name.endswith('weight'):
                p.uniform_(0.5, 1.5)
            elif name.endswith('bias'):
                p.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope='module')
def timm_sd(timm_model):
    return {k: v.detach().clone().contiguous() for k, v in timm_model.state_dict().items()}


@pytest.fixture(scope='module')
def images():
    return np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)


def torch_logits(model, images):
    with torch.no_grad():
        out = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    return getattr(out, 'logits', out).numpy()


@pytest.fixture(scope='module')
def timm_logits(timm_model, images):
    return torch_logits(timm_model, images)


@pytest.fixture(scope='module')
def model():
    return create_model(NAME, **SMALL)


@pytest.fixture(scope='module')
def variables(timm_sd, model):
    return load_torch_weights(timm_sd, model)


@pytest.fixture(scope='module')
def saved(tmp_path_factory, variables, model):
    """A converted checkpoint directory, written once (tests copy it before damaging it)."""
    return save_converted(tmp_path_factory.mktemp('saved') / 'ckpt', variables, model, model_name=NAME)


def test_timm_weights_give_timm_logits(model, variables, images, timm_logits):
    assert detect_layout(read_state_dict({'patch_embed.proj.weight': np.zeros(1)}))[0] == 'timm'
    assert_close(forward(model, variables, images), timm_logits)


# ----------------------------------------------------------------------------------------------
# save_converted / load_converted
# ----------------------------------------------------------------------------------------------

def test_save_load_round_trip_is_exact(tmp_path, saved, model, variables, images):
    with open(os.path.join(saved, 'config.json')) as f:
        config = json.load(f)
    assert config == {'format': 'swinv2_jax.converted/1', 'model_name': NAME, 'model': model_fields(model)}
    assert sorted(os.listdir(os.path.dirname(saved))) == ['ckpt']  # no temporary directory left

    model2, variables2 = load_converted(saved)
    assert model2 == model and model_fields(model2) == model_fields(model)
    assert_trees_equal(variables2, variables)
    np.testing.assert_array_equal(forward(model2, variables2, images), forward(model, variables, images))


def test_save_refuses_to_overwrite(tmp_path, model, variables):
    out = tmp_path / 'ckpt'
    out.mkdir()  # an empty directory is fine
    save_converted(out, variables, model)
    with pytest.raises(ValueError, match='overwrite'):
        save_converted(out, variables, model)
    # overwrite=True replaces it; the new config is the one on disk
    save_converted(out, variables, model, model_name='second', overwrite=True)
    assert json.loads((out / 'config.json').read_text())['model_name'] == 'second'
    assert sorted(os.listdir(tmp_path)) == ['ckpt']
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='not a directory'):
        save_converted(tmp_path / 'file', variables, model)


def test_interrupted_save_leaves_nothing_that_looks_valid(tmp_path, monkeypatch, saved, model, variables):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # killed after the variables were written, before config.json

    monkeypatch.setattr(converted, 'model_fields', fail)
    with pytest.raises(KeyboardInterrupt):
        save_converted(tmp_path / 'new', variables, model)
    assert os.listdir(tmp_path) == []
    old = shutil.copytree(saved, tmp_path / 'old')
    with pytest.raises(KeyboardInterrupt):
        save_converted(old, variables, model, overwrite=True)
    assert os.listdir(tmp_path) == ['old']
    monkeypatch.undo()
    assert load_converted(old)[0] == model  # the old checkpoint is untouched


def test_save_rejects_variables_that_do_not_fit(tmp_path, model, variables):
    params = dict(variables['params'])
    del params['head']
    with pytest.raises(ValueError, match='head/kernel') as e:
        save_converted(tmp_path / 'ckpt', {'params': params}, create_model(NAME, **SMALL))
    assert 'nothing was written' in str(e.value)
    assert os.listdir(tmp_path) == []


def test_load_converted_errors(tmp_path, saved):
    missing = tmp_path / 'nope'
    with pytest.raises(FileNotFoundError, match='nope'):
        load_converted(missing)

    def copy(name):
        return shutil.copytree(saved, tmp_path / name)

    d = copy('no_config')
    os.remove(d / 'config.json')
    with pytest.raises(FileNotFoundError, match='config.json'):
        load_converted(d)

    d = copy('bad_json')
    (d / 'config.json').write_text('{"format": "swinv2_jax.conv')
    with pytest.raises(ValueError, match='bad_json.*not valid JSON'):
        load_converted(d)

    d = copy('other_format')
    (d / 'config.json').write_text('{"format": "something-else", "model": {}}')
    with pytest.raises(ValueError, match='format'):
        load_converted(d)

    d = copy('other_model')  # config says embed_dim 32: every shape differs, all are listed
    config = json.loads((d / 'config.json').read_text())
    config['model']['embed_dim'] = 32
    (d / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match='mis-shaped.*patch_embed/proj/kernel') as e:
        load_converted(d)
    assert 'head/kernel' in str(e.value) and 'other_model' in str(e.value)

    d = copy('no_variables')
    shutil.rmtree(d / 'variables')
    with pytest.raises(FileNotFoundError, match='variables'):
        load_converted(d)



# When reading a damaged checkpoint fails, tensorstore reads still in flight finish after Orbax has
# closed its event loop and report 'Event loop is closed' as unraisable exceptions: noise of the
# error path, let out here (and waited for, so that they land in this test, not the next one).
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_load_converted_corrupt_variables(tmp_path, saved):
    def copy(name):
        return shutil.copytree(saved, tmp_path / name)

    d = copy('corrupt_everything')  # every file of the Orbax checkpoint overwritten
    for root, _, files in os.walk(d / 'variables'):
        for f in files:
            with open(os.path.join(root, f), 'wb') as fh:
                fh.write(b'\x00garbage')
    with pytest.raises(ValueError, match='corrupt_everything.*variables'):
        load_converted(d)

    d = copy('corrupt_data')  # metadata intact, array data damaged
    data = [os.path.join(r, f) for r, _, fs in os.walk(d / 'variables') for f in fs
            if os.sep + 'd' + os.sep in os.path.join(r, f)]
    assert data
    for path in data:
        with open(path, 'wb') as fh:
            fh.write(b'\x00garbage')
    with pytest.raises(ValueError, match='corrupt_data.*variables'):
        load_converted(d)
    time.sleep(0.5)
    gc.collect()


# ----------------------------------------------------------------------------------------------
# Command line, end to end (in process)
# ----------------------------------------------------------------------------------------------

def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ('--to-torch', '--override', '--layout', 'swinv2_tiny_window8_256', 'load_converted'):
        assert word in out


def test_cli_timm_and_hf_round_trip(tmp_path, capsys, timm_sd, timm_model, model, variables, images,
                                    timm_logits):
    from safetensors.torch import load_file, save_file
    pth, st = tmp_path / 'timm.pth', tmp_path / 'timm.safetensors'
    torch.save(timm_sd, pth)
    save_file(timm_sd, st)

    assert main([str(pth), *CLI_SMALL, '--out', str(tmp_path / 'from_pth')]) == 0
    summary = capsys.readouterr().out
    n_params = sum(v.numel() for v in timm_model.parameters())
    assert 'timm' in summary and f'{n_params:,}' in summary and 'from_pth' in summary
    assert main([str(st), *CLI_SMALL, '--layout', 'timm', '--out', str(tmp_path / 'from_st')]) == 0

    model1, vars1 = load_converted(tmp_path / 'from_pth')
    model2, vars2 = load_converted(tmp_path / 'from_st')
    assert model1 == model == model2
    assert_trees_equal(vars1, variables)
    assert_trees_equal(vars2, variables)
    assert_close(forward(model1, vars1, images), timm_logits)

    # back to timm: the same tensors, strict load, the same logits
    out = tmp_path / 'back_timm.safetensors'
    assert main([str(tmp_path / 'from_pth'), '--to-torch', '--layout', 'timm', '--out', str(out)]) == 0
    assert 'timm' in capsys.readouterr().out
    back = load_file(out)
    assert sorted(back) == sorted(timm_sd)
    for k, v in timm_sd.items():
        assert torch.equal(back[k], v), k
    timm2 = new_timm_model()
    timm2.load_state_dict(back, strict=True)
    np.testing.assert_array_equal(torch_logits(timm2, images), timm_logits)
    # an existing output file needs --overwrite
    assert main([str(tmp_path / 'from_pth'), '--to-torch', '--out', str(out)]) != 0
    assert 'overwrite' in capsys.readouterr().err

    # Hugging Face
    from transformers import Swinv2Config, Swinv2ForImageClassification
    out = tmp_path / 'hf.safetensors'
    assert main([str(tmp_path / 'from_pth'), '--to-torch', '--layout', 'hf', '--out', str(out)]) == 0
    config = Swinv2Config(image_size=64, patch_size=4, embed_dim=16, depths=[1, 2, 1, 1],
                          num_heads=[1, 2, 2, 4], window_size=4, num_labels=1000)
    hf = Swinv2ForImageClassification(config).eval()
    hf_sd = load_file(out)
    assert set(hf.state_dict()) <= set(hf_sd), sorted(set(hf.state_dict()) - set(hf_sd))
    hf.load_state_dict(hf_sd, strict=True)
    assert_close(torch_logits(hf, images), timm_logits)

    # headless: the checkpoint's head is dropped; Hugging Face's Swinv2Model has no 'swinv2.' prefix
    from transformers import Swinv2Model
    assert main([str(st), *CLI_SMALL, '--num-classes', '0', '--out', str(tmp_path / 'headless')]) == 0
    out = tmp_path / 'headless_hf.safetensors'
    assert main([str(tmp_path / 'headless'), '--to-torch', '--layout', 'hf', '--out', str(out)]) == 0
    Swinv2Model(config).load_state_dict(load_file(out), strict=True)
    assert os.listdir(tmp_path) and not [f for f in os.listdir(tmp_path) if '.tmp-' in f]


def test_cli_errors_in_process(tmp_path, capsys, timm_sd):
    assert main([str(tmp_path / 'missing.pth'), *CLI_SMALL, '--out', str(tmp_path / 'o')]) != 0
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'missing.pth' in err and 'Traceback' not in err

    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": nonsense')
    assert main([str(bad), *CLI_SMALL, '--out', str(tmp_path / 'o')]) != 0
    assert 'bad.safetensors' in capsys.readouterr().err

    sd = dict(timm_sd)
    del sd['norm.weight']
    src = tmp_path / 'incomplete.pth'
    torch.save(sd, src)
    assert main([str(src), *CLI_SMALL, '--out', str(tmp_path / 'o')]) != 0
    assert 'norm.weight' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'o')

    full = tmp_path / 'full.pth'
    torch.save(timm_sd, full)
    assert main([str(full), *CLI_SMALL, '--out', str(tmp_path / 'o')]) == 0
    assert main([str(full), *CLI_SMALL, '--out', str(tmp_path / 'o')]) != 0  # exists
    assert 'overwrite' in capsys.readouterr().err
    assert main([str(full), *CLI_SMALL, '--out', str(tmp_path / 'o'), '--overwrite']) == 0

    assert main([str(full), *CLI_SMALL, '--override', 'bogus=1', '--out', str(tmp_path / 'p')]) != 0
    assert 'bogus' in capsys.readouterr().err
    assert main([str(tmp_path / 'nodir'), '--to-torch', '--out', str(tmp_path / 'x.safetensors')]) != 0
    assert 'nodir' in capsys.readouterr().err
    assert main([str(tmp_path / 'o'), '--to-torch', '--out', str(tmp_path / 'x.pth')]) != 0
    assert '.safetensors' in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse usage errors
        main([str(full), '--out', str(tmp_path / 'q')])  # no --model
    with pytest.raises(SystemExit):
        main([str(tmp_path / 'o'), '--to-torch', '--layout', 'simmim', '--out', str(tmp_path / 'y.safetensors')])


def test_cli_subprocess_exits_cleanly(tmp_path):
    src = tmp_path / 'truncated.safetensors'  # .safetensors: the subprocess need not import torch
    src.write_bytes(b'\x40\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype": "F32", "shape"')
    proc = subprocess.run([sys.executable, '-m', 'swinv2_jax.convert', str(src), '--model', NAME,
                           '--out', str(tmp_path / 'out')], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert 'error:' in proc.stderr and 'truncated.safetensors' in proc.stderr
    assert not os.path.exists(tmp_path / 'out')


def test_old_import_paths_and_lazy_package_exports():
    import swinv2_jax
    import swinv2_jax.checkpoints
    import swinv2_jax.convert
    import swinv2_jax.convert_simmim
    from swinv2_jax.weights import pytorch, simmim
    assert swinv2_jax.convert.load_torch_weights is swinv2_jax.load_torch_weights is pytorch.load_torch_weights
    assert swinv2_jax.convert.export_torch_weights is swinv2_jax.export_torch_weights is pytorch.export_torch_weights
    assert swinv2_jax.convert.main is main
    assert swinv2_jax.checkpoints.load_converted is swinv2_jax.load_converted is load_converted
    assert swinv2_jax.checkpoints.save_converted is swinv2_jax.save_converted is save_converted
    assert swinv2_jax.convert_simmim.load_simmim_weights is simmim.load_simmim_weights
    # `import swinv2_jax` pulls in neither Orbax nor torch, and running the converter's module does not
    # find it imported already (runpy's RuntimeWarning, an error here)
    code = ("import runpy, sys; import swinv2_jax; "
            "assert not [m for m in sys.modules if m.startswith(('orbax', 'torch', 'swinv2_jax.convert'))]; "
            "sys.argv = ['convert', '--help']; runpy.run_module('swinv2_jax.convert', run_name='__main__')")
    proc = subprocess.run([sys.executable, '-W', 'error::RuntimeWarning', '-c', code], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '--to-torch' in proc.stdout


def test_tree_diff():
    expected = {'a': {'kernel': np.zeros((2, 3), np.float32), 'bias': np.zeros(3, np.float32)},
                'b': {'scale': np.zeros(4, np.float32)}}
    given = {'a': {'kernel': np.zeros((3, 2), np.float32), 'bias': np.zeros(3, np.float16)},
             'c': {'x': np.zeros(1)}, 'skip': {'me': np.zeros(1)}}
    diff = diff_trees(expected, given, ignore=lambda name: name.startswith('skip/'),
                      given_word='checkpoint', expected_word='model')
    assert (diff.missing, diff.unexpected) == (['b/scale'], ['c/x'])
    assert diff.misshaped == ['a/kernel: checkpoint [3, 2], model [2, 3]']
    assert diff.lines() == ['missing (1): b/scale', 'unexpected (1): c/x',
                            'mis-shaped (1): a/kernel: checkpoint [3, 2], model [2, 3]']
    assert diff.lines(per_name=True) == ['b/scale: missing', 'c/x: unexpected',
                                         'a/kernel: checkpoint [3, 2], model [2, 3]']
    assert diff.message('title:', ['hint']) == ('title:\n  missing (1): b/scale\n  unexpected (1): c/x\n'
                                                '  mis-shaped (1): a/kernel: checkpoint [3, 2], model [2, 3]\n  hint')
    dtypes = diff_trees(expected['a'], given['a'], check_dtype=True)
    assert 'bias: source float16[3], model float32[3]' in dtypes.misshaped
    flat = {'x.weight': np.zeros(2)}  # flat name -> array mappings (state dicts) compare as they are
    assert not diff_trees(flat, {'x.weight': np.ones(2)})
    assert diff_trees(flat, {}).missing == ['x.weight']


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------

def to_torch(sd):
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def test_official_layout_is_what_timm_reads_as_official(model, variables, images, timm_logits):
    official = export_torch_weights(variables, model, layout='official')
    assert 'layers.0.downsample.reduction.weight' in official and 'head.weight' in official
    assert any(k.endswith('relative_position_index') for k in official)
    # the buffers the official model loads are the ones timm computes (timm's are not saved)
    timm2 = new_timm_model()
    buffers = {k: b for k, b in timm2.named_buffers() if not k.endswith('k_bias')}
    assert any(k.endswith('attn_mask') for k in buffers)
    for k, b in buffers.items():  # all in blocks, whose names the two layouts share
        np.testing.assert_array_equal(official[k], b.numpy(), err_msg=k)
        assert official[k].dtype == b.numpy().dtype, k
    filtered = timm.models.swin_transformer_v2.checkpoint_filter_fn(to_torch(official), timm2)
    timm2.load_state_dict(filtered, strict=True)
    np.testing.assert_array_equal(torch_logits(timm2, images), timm_logits)

    # an official training checkpoint: {'model': ...} wrapper, buffers included, torch tensors
    wrapped = {'model': to_torch(official), 'epoch': 300, 'optimizer': {}}
    assert detect_layout(read_state_dict(wrapped))[0] == 'official'
    assert_trees_equal(load_torch_weights(wrapped, model), variables)


def test_simmim_layout(model, variables):
    official = export_torch_weights(variables, model, layout='official')
    sd, renamed = {}, 0
    for k, v in official.items():
        if k.startswith('head.'):
            continue  # SimMIM pre-training encoders are headless
        m = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', k)
        if m and (int(m.group(1)) + int(m.group(2))) % 2 == 0 and '.cpb_mlp.' in k:
            k = k.replace('.cpb_mlp.', '.rpe_mlp.')  # older SimMIM checkpoints
            renamed += 1
        sd['encoder.' + k] = v
    assert renamed
    sd['encoder.mask_token'] = np.zeros((1, 1, 16), np.float32)
    sd['decoder.0.weight'] = np.ones((4 ** 2 * 32 * 3, 128, 1, 1), np.float32)
    sd['decoder.0.bias'] = np.ones((4 ** 2 * 32 * 3,), np.float32)
    assert detect_layout(sd)[0] == 'simmim'
    headless = create_model(NAME, **SMALL, num_classes=0)
    loaded = load_torch_weights(sd, headless)
    want = {'params': {k: v for k, v in variables['params'].items() if k != 'head'}}
    assert_trees_equal(loaded, want)


def test_headless_model_ignores_the_head(timm_sd, variables):
    loaded = load_torch_weights(timm_sd, create_model(NAME, **SMALL, num_classes=0))
    assert 'head' not in loaded['params']
    assert_trees_equal(loaded, {'params': {k: v for k, v in variables['params'].items() if k != 'head'}})


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

def test_all_mismatches_in_one_error(timm_sd, model):
    sd = dict(timm_sd)
    del sd['layers.1.blocks.1.attn.q_bias']
    sd['layers.0.blocks.0.attn.bogus'] = torch.zeros(3)
    sd['layers.2.blocks.0.mlp.fc1.weight'] = torch.zeros(5, 64)
    with pytest.raises(ValueError) as e:
        load_torch_weights(sd, model)
    msg = str(e.value)
    for name in ('layers.1.blocks.1.attn.q_bias', 'layers.0.blocks.0.attn.bogus',
                 'layers.2.blocks.0.mlp.fc1.weight'):
        assert name in msg, (name, msg)


def test_class_count_mismatch_mentions_num_classes(timm_sd):
    with pytest.raises(ValueError, match='num_classes'):
        load_torch_weights(timm_sd, create_model(NAME, **SMALL, num_classes=10))


def test_unreadable_files(tmp_path, timm_sd):
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        read_state_dict(tmp_path / 'absent.pth')

    good = tmp_path / 'good.pth'
    torch.save(timm_sd, good)
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='truncated.pth'):
        read_state_dict(truncated)

    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'\xff' * 64)
    with pytest.raises(ValueError, match='corrupt.safetensors'):
        read_state_dict(corrupt)


class PickledCode:
    """Stands for arbitrary pickled code in a checkpoint."""

    def __init__(self):
        self.x = 1


def test_pickled_objects_are_not_run(tmp_path):
    path = tmp_path / 'code.pth'
    torch.save({'weight': torch.zeros(2), 'obj': PickledCode()}, path)
    with pytest.raises(ValueError, match="(?s)code.pth.*weights_only"):
        read_state_dict(path)
