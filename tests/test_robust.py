"""Training survives what breaks on real clusters, each with one clear message and nothing lost:
damaged checkpoints, unreadable images, a full disk, nonsense config values, one failing process."""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from swinv2_jax.train import checkpointing, config_checks, metrics, trainer
from swinv2_jax.train.checkpointing import CheckpointRestoreError, CheckpointSaveError, Checkpointer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_train import fake_data, load_config, tiny_config  # noqa: E402,F401  (fake_data: a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures('compilation_cache')


def files_of(directory):
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            path = os.path.join(root, n)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def largest_array_file(step_dir):
    files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, 'state')) for n in ns
             if os.sep + 'd' + os.sep in os.path.join(r, n)]
    return max(files, key=os.path.getsize)


# ----------------------------------------------------------------------------------------------
# Checkpoints: resume from the newest step that restores
# ----------------------------------------------------------------------------------------------

def small_state(scale=1.0, width=256):
    kernel = np.random.RandomState(0).normal(size=(width, 64)).astype(np.float32) * scale  # incompressible
    return {'step': np.int32(3), 'params': {'dense': {'kernel': kernel}},
            'opt_state': [np.zeros((width, 64), np.float32), np.zeros((), np.int32)]}


def abstract(state):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), state)


def saved_steps(workdir, steps=(1, 2)):
    ckpt = Checkpointer(str(workdir), keep=5, async_save=False)
    for s in steps:
        ckpt.save(s, small_state(float(s)), {'model_name': 'x'})
    ckpt.close()
    return os.path.join(str(workdir), 'checkpoints')


def damage(step_dir, how):
    if how == 'truncated':
        path = largest_array_file(step_dir)
        os.truncate(path, os.path.getsize(path) // 3)
    elif how == 'deleted_array':
        os.remove(largest_array_file(step_dir))
    elif how == 'missing_metadata':
        os.remove(os.path.join(step_dir, 'state', '_METADATA'))
    elif how == 'empty':
        shutil.rmtree(step_dir)
        os.makedirs(step_dir)


@pytest.mark.parametrize('how', ['truncated', 'deleted_array', 'missing_metadata', 'empty'])
def test_a_damaged_newest_step_is_moved_aside_and_the_one_before_restores(tmp_path, how, caplog):
    directory = saved_steps(tmp_path)
    damage(os.path.join(directory, '2'), how)
    before = files_of(os.path.join(directory, '2'))
    ckpt = Checkpointer(str(tmp_path))
    state, meta, step = ckpt.restore_newest(abstract(small_state()))
    ckpt.close()
    assert step == 1 and meta == {'model_name': 'x'}
    np.testing.assert_array_equal(state['params']['dense']['kernel'], small_state(1.0)['params']['dense']['kernel'])
    moved = os.listdir(tmp_path / 'checkpoints_corrupt')
    assert len(moved) == 1 and moved[0].startswith('2-')
    assert files_of(tmp_path / 'checkpoints_corrupt' / moved[0]) == before     # kept as it was
    assert sorted(os.listdir(directory)) == ['1']
    warning = ' '.join(r.getMessage() for r in caplog.records if r.levelname == 'WARNING')
    assert 'step 2' in warning and 'checkpoints_corrupt' in warning and 'kept, not deleted' in warning


def test_only_damaged_steps_is_one_error_that_says_so(tmp_path):
    directory = saved_steps(tmp_path)
    damage(os.path.join(directory, '2'), 'truncated')
    damage(os.path.join(directory, '1'), 'missing_metadata')
    ckpt = Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointRestoreError) as e:
        ckpt.restore_newest(abstract(small_state()))
    ckpt.close()
    text = str(e.value)
    assert 'every step is damaged' in text and 'not a config change' in text
    assert 'step 2' in text and 'step 1' in text and 'missing state/_METADATA' in text
    assert 'rerun the same command' in text and 'backup' in text
    assert 'Traceback' not in text and len(text) < 2000
    assert sorted(n.split('-')[0] for n in os.listdir(tmp_path / 'checkpoints_corrupt')) == ['1', '2']


def test_a_changed_config_is_told_apart_from_damage_and_moves_nothing(tmp_path):
    directory = saved_steps(tmp_path)
    before = files_of(directory)
    ckpt = Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointRestoreError) as e:
        ckpt.restore_newest(abstract(small_state(width=300)))
    ckpt.close()
    text = str(e.value)
    assert 'at step 2' in text and 'intact' in text and 'config changed' in text
    assert 'params mis-shaped (1): dense/kernel: checkpoint [256, 64], model [300, 64]' in text
    assert 'another --workdir' in text and 'config it was saved with' in text
    assert files_of(directory) == before and not os.path.exists(tmp_path / 'checkpoints_corrupt')


def test_train_resumes_past_a_truncated_newest_step(tmp_path, fake_data):
    c = tiny_config(num_train_steps=6, checkpoint_every_steps=3)
    trainer.train_and_evaluate(c, str(tmp_path))
    damage(str(tmp_path / 'checkpoints' / '6'), 'truncated')
    intact = files_of(tmp_path / 'checkpoints' / '3')
    c = tiny_config(num_train_steps=8, checkpoint_every_steps=3, keep_checkpoints=5)
    state = trainer.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 8
    assert [n.split('-')[0] for n in os.listdir(tmp_path / 'checkpoints_corrupt')] == ['6']
    assert sorted(os.listdir(tmp_path / 'checkpoints'), key=int) == ['3', '6', '8']
    assert files_of(tmp_path / 'checkpoints' / '3') == intact


# ----------------------------------------------------------------------------------------------
# Saving: a full disk stops the run at once, with the sizes
# ----------------------------------------------------------------------------------------------

def test_a_failed_save_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, fake_data, monkeypatch):
    real_save = Checkpointer.save

    def save(self, step, state, meta):
        if step >= 6:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(self, step, state, meta)
    monkeypatch.setattr(Checkpointer, 'save', save)
    c = tiny_config(num_train_steps=8, checkpoint_every_steps=3, eval_every_steps=6)
    with pytest.raises(CheckpointSaveError) as e:
        trainer.train_and_evaluate(c, str(tmp_path))
    text = str(e.value)
    assert text.startswith('saving a checkpoint (by step 6)')
    assert 'the disk is full' in text and 'MiB' in text and 'free' in text
    assert 'last complete checkpoint is step 3' in text and 'rerun the same command' in text
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3']
    steps = [r['step'] for r in metrics.read_metrics(str(tmp_path)) if 'loss' in r]
    assert max(steps) == 6       # stopped at the failed save: no training or evaluation past it
    assert not any('eval_top1' in r for r in metrics.read_metrics(str(tmp_path)))


def test_a_background_save_failure_stops_at_the_next_step(tmp_path, fake_data, monkeypatch):
    calls = []

    def check_for_errors(self):
        calls.append(self.latest_step())
        if self.latest_step() == 3:
            raise ValueError('tensorstore: Error writing local file: No space left on device')
    import orbax.checkpoint as ocp
    monkeypatch.setattr(ocp.CheckpointManager, 'check_for_errors', check_for_errors)
    with pytest.raises(CheckpointSaveError, match='(?s)the disk is full.*MiB'):
        trainer.train_and_evaluate(tiny_config(num_train_steps=8, checkpoint_every_steps=3), str(tmp_path))
    assert [r['step'] for r in metrics.read_metrics(str(tmp_path)) if 'loss' in r][-1] <= 4


def test_free_space_is_checked_before_training(tmp_path, fake_data, monkeypatch):
    usage = shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(checkpointing.shutil, 'disk_usage', lambda p: usage._replace(free=1000))
    with pytest.raises(CheckpointSaveError, match=r'(?s)not enough space.*MiB.*0\.0 MiB free'):
        trainer.train_and_evaluate(tiny_config(), str(tmp_path))
    assert not any('loss' in r for r in metrics.read_metrics(str(tmp_path)))


def test_a_tiny_tmpfs_workdir_stops_with_the_sizes(tmp_path, fake_data):
    mnt = tmp_path / 'small'
    mnt.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mnt)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        # ~1.2 MB of state: room for the first checkpoint, not for the ones after it
        c = tiny_config(num_train_steps=8, checkpoint_every_steps=1, keep_checkpoints=8)
        c.model_overrides.embed_dim = 32
        with pytest.raises(CheckpointSaveError) as e:
            trainer.train_and_evaluate(c, str(mnt))
        text = str(e.value)
        assert 'failed: the disk is full' in text and 'MiB' in text and 'free' in text, text
        assert 'the last complete checkpoint is step' in text
        last = int(text.split('the last complete checkpoint is step ')[1].split()[0])
        assert last >= 1 and Checkpointer(str(mnt), read_only=True).latest_step() == last
    finally:
        subprocess.run(['umount', str(mnt)])


# ----------------------------------------------------------------------------------------------
# Evaluation never loses training
# ----------------------------------------------------------------------------------------------

def test_the_step_is_saved_before_its_evaluation(tmp_path, fake_data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('Unknown image file format')
        yield
    monkeypatch.setattr(fake_data, 'eval_iterator', broken)
    with pytest.raises(RuntimeError, match='Unknown image'):
        trainer.train_and_evaluate(tiny_config(num_train_steps=8, checkpoint_every_steps=4,
                                               eval_every_steps=4), str(tmp_path))
    assert Checkpointer(str(tmp_path), read_only=True).latest_step() == 4


# ----------------------------------------------------------------------------------------------
# Config values: every problem at once, before anything is built
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('key, value, words', [
    ('optim.lr', -1.0, 'optim.lr=-1.0: must be >= 0'),
    ('batch_size', 0, 'batch_size=0: must be a positive integer'),
    ('eval_batch_size', -8, 'eval_batch_size=-8: must be a positive integer'),
    ('optim.warmup_steps', 9, 'optim.warmup_steps=9: the warm-up is longer than the 8 optimizer updates'),
    ('optim.grad_accum_steps', 0, 'optim.grad_accum_steps=0: must be >= 1'),
    ('optim.ema_decay', 1.0, 'optim.ema_decay=1.0: must be >= 0 and < 1'),
    ('optim.betas', (0.9, 1.5), 'optim.betas=(0.9, 1.5): must be two numbers in [0, 1)'),
    ('optim.eps', 0.0, 'optim.eps=0.0: must be > 0'),
    ('aug.crop_scale', (0.5, 0.1), 'aug.crop_scale=(0.5, 0.1): must be (low, high)'),
    ('aug.label_smoothing', 1.0, 'aug.label_smoothing=1.0: must be >= 0 and < 1'),
    ('aug.interpolation', 'cubic', "aug.interpolation='cubic': use one of"),
    ('keep_checkpoints', 0, 'keep_checkpoints=0: must be >= 1'),
    ('log_every_steps', 0, 'log_every_steps=0: must be >= 1'),
    ('num_train_steps', 0, 'num_epochs'),
    ('sharding', 'zero3', "sharding='zero3': unknown; use one of 'replicated', 'zero1', 'fsdp'"),
    ('init_from', '/no/such/file.pth', "init_from='/no/such/file.pth': no such file"),
    ('optim.schedule', 'poly', "optim.schedule='poly': unknown; use one of 'cosine', 'linear', 'multistep'"),
])
def test_each_bad_config_value_is_named_with_a_fix(key, value, words):
    c = tiny_config(**{key: value})
    if key == 'num_train_steps':
        c.num_epochs = 0.0
    errors = config_checks.config_errors(c, num_devices=1, **_tables())
    assert any(words in e for e in errors), errors
    assert len(errors) == 1, errors


def test_batch_must_split_over_devices():
    errors = config_checks.config_errors(tiny_config(batch_size=12), num_devices=8)
    assert errors == ['batch_size=12: must be divisible by the 8 devices and 1 processes; e.g. 8 or 16']


def _tables():
    """The names the trainer hands the check: objectives, sharding modes, schedules."""
    from swinv2_jax.train import objectives, optim, sharding
    return dict(objectives=tuple(objectives.OBJECTIVES), sharding_modes=tuple(sharding.MODES),
                schedules=tuple(optim.SCHEDULES))


def test_the_recipes_pass_the_checks():
    for name, arg in [('digits', None), ('digits', 'runlocal'), ('imagenet1k_scratch', 'tiny'),
                      ('imagenet22k_pretrain', 'base'), ('imagenet1k_finetune', 'base_256'),
                      ('simmim_pretrain', None), ('simmim_finetune', None), ('digits_segmentation', None),
                      ('ade20k_upernet', 'swinv2_base'), ('ade20k_upernet', 'swin_base_v1')]:
        assert config_checks.config_errors(load_config(name, arg), num_devices=8, **_tables()) == [], (name, arg)


def test_all_bad_values_and_a_file_workdir_at_once_before_anything_is_written(tmp_path, fake_data):
    workdir = tmp_path / 'afile'
    workdir.write_text('not a directory')
    c = tiny_config(**{'optim.lr': -1.0, 'batch_size': 0})
    with pytest.raises(config_checks.ConfigError) as e:
        trainer.train_and_evaluate(c, str(workdir))
    text = str(e.value)
    assert text.startswith('3 invalid config values')
    assert 'optim.lr=-1.0' in text and 'batch_size=0' in text and 'is a file, not a directory' in text
    assert workdir.read_text() == 'not a directory'


def test_unknown_dataset_names_the_embedded_and_folder_options(tmp_path):
    from swinv2_jax.data import dataset_errors
    c = load_config('digits', 'runlocal')
    c.dataset = 'no_such_dataset'
    errors = dataset_errors(c)
    assert len(errors) == 1 and "'digits'" in errors[0] and "'folder:" in errors[0]
    assert len(errors[0]) < 400                       # not tfds' list of every name
    c = load_config('digits', 'runlocal')
    c.eval_split = 'validation'
    assert dataset_errors(c) == ["eval_split='validation': digits has no split 'validation'; its splits "
                                 "are train, test"]
    c.eval_split, c.dataset = 'test', f'folder:{tmp_path}/missing'
    assert 'no directory' in dataset_errors(c)[0]


def test_geometry_hint_names_num_heads():
    from swinv2_jax.models import create_model
    with pytest.raises(ValueError) as e:
        create_model('swinv2_digits_window4_32', embed_dim=64)
    text = str(e.value)
    assert 'Change num_heads' in text and 'num_heads=(4, 8)' in text and 'img_size' not in text


# ----------------------------------------------------------------------------------------------
# Folder datasets: every image's header checked when the dataset is opened
# ----------------------------------------------------------------------------------------------

def write_folder(root, bad_in=('train', 'val')):
    """root/<split>/<class>/*.png|jpg: 8 good images per split, and in each split of `bad_in` a
    corrupt, a zero-byte and a truncated one."""
    import tensorflow as tf
    rng = np.random.RandomState(0)
    bad = []
    for split in ('train', 'val'):
        for i in range(8):
            cls = f'c{i % 2}'
            os.makedirs(root / split / cls, exist_ok=True)
            image = rng.randint(0, 255, (16, 16, 3), np.uint8)
            data = tf.io.encode_png(image) if i % 2 else tf.io.encode_jpeg(image)
            (root / split / cls / f'{i}.{"png" if i % 2 else "jpg"}').write_bytes(data.numpy())
        if split in bad_in:
            (root / split / 'c0' / 'corrupt.jpg').write_bytes(b'this is not an image at all' * 10)
            (root / split / 'c0' / 'empty.png').write_bytes(b'')
            whole = (root / split / 'c0' / '0.jpg').read_bytes()
            (root / split / 'c1' / 'cut.jpg').write_bytes(whole[:len(whole) // 2])
            bad += [f'{split}/c0/corrupt.jpg', f'{split}/c0/empty.png', f'{split}/c1/cut.jpg']
    return bad


def folder_config(root, **changes):
    c = load_config('digits', 'runlocal')
    c.dataset, c.train_split, c.eval_split = f'folder:{root}', 'train', 'val'
    for k, v in changes.items():
        c[k] = v
    return c


@pytest.mark.parametrize('bad_in', [('train',), ('val',)])
def test_unreadable_images_are_listed_before_training(tmp_path, bad_in):
    from swinv2_jax.data import image_files, pipeline
    root = tmp_path / 'images'
    bad = write_folder(root, bad_in)
    pipeline._CHECKED_FOLDERS.clear()
    with pytest.raises(image_files.BadImagesError) as e:
        pipeline.dataset_info(folder_config(root))
    text = str(e.value)
    assert text.startswith('3 image file(s)') and 'skip_bad_images' in text
    for rel in bad:
        assert str(root / rel) in text
    assert 'empty file' in text and 'truncated JPEG' in text and 'not a JPEG or PNG' in text
    cache = json.loads((root / image_files.CACHE_NAME).read_text())
    assert len(cache['files']) == 16 + 3 and cache['files'][bad[1]][2] == 'empty file (0 bytes)'


def test_skip_bad_images_trains_on_the_rest(tmp_path, caplog):
    from swinv2_jax.data import pipeline
    root = tmp_path / 'images'
    write_folder(root)
    pipeline._CHECKED_FOLDERS.clear()
    c = folder_config(root, skip_bad_images=True)
    info = pipeline.dataset_info(c)
    assert info.num_train_examples == 8 and info.num_eval_examples == {'val': 8}
    assert any('skipping 6 unreadable' in r.getMessage() for r in caplog.records)
    batch = next(pipeline.train_iterator(c, (32, 32), local_batch_size=8))
    assert batch['image'].shape == (8, 32, 32, 3) and np.isfinite(batch['image']).all()
    masks = sum(b['mask'].sum() for b in pipeline.eval_iterator(c, 'val', (32, 32), local_batch_size=4))
    assert masks == 8


def test_header_check_catches_what_tensorflow_cannot_decode(tmp_path):
    from swinv2_jax.data import image_files
    import tensorflow as tf
    image = np.zeros((20, 12, 3), np.uint8)
    for name, data in [('a.jpg', tf.io.encode_jpeg(image).numpy()), ('b.png', tf.io.encode_png(image).numpy())]:
        (tmp_path / name).write_bytes(data)
        assert image_files.check_file(str(tmp_path / name)) is None
        (tmp_path / ('cut_' + name)).write_bytes(data[:-20])
        assert 'truncated' in image_files.check_file(str(tmp_path / ('cut_' + name)))
    assert image_files._jpeg_size((tmp_path / 'a.jpg').read_bytes()) == (20, 12)


# ----------------------------------------------------------------------------------------------
# One failing process stops every process with the same message
# ----------------------------------------------------------------------------------------------

WORKER = r'''
import os, sys, time
sys.path.insert(0, os.environ['REPO'])
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from swinv2_jax.train import multihost
def check():
    if jax.process_index() == 1:
        raise OSError(28, 'No space left on device (process 1 only)')
try:
    multihost.stop_together(check)
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('would hang without the agreement')
    print('NOT STOPPED')
except Exception as e:
    print(f'STOPPED {type(e).__name__}: {e}')
'''


def test_one_failing_process_stops_both(tmp_path):
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, REPO=REPO, JAX_PLATFORMS='cpu')
    procs = [subprocess.Popen([sys.executable, '-c', WORKER, f'localhost:{port}', str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert 'STOPPED StoppedByAnotherProcess: process 1: [Errno 28] No space left on device' in outs[0], outs[0]
    assert 'STOPPED OSError: [Errno 28] No space left on device' in outs[1], outs[1]


# ----------------------------------------------------------------------------------------------
# train.py: one message on the console, the traceback in the workdir's log
# ----------------------------------------------------------------------------------------------

def test_train_py_prints_one_error_and_logs_the_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), f'--workdir={tmp_path}',
                           '--config', os.path.join(REPO, 'configs', 'digits.py:runlocal'),
                           '--config.optim.lr=-1', '--config.batch_size=0'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert errors == ['error: 2 invalid config values (set them with --config.KEY=VALUE; every key is '
                      'documented in swinv2_jax/train/config_lib.py):'], proc.stderr[-3000:]
    assert '  optim.lr=-1.0: must be >= 0' in proc.stderr and '  batch_size=0:' in proc.stderr
    assert f'(traceback in {tmp_path}/train.log)' in proc.stderr
    log = (tmp_path / 'train.log').read_text()
    assert 'Traceback' in log and 'ConfigError' in log
