"""The tools on a real training run: train.py (digits, a few steps) writes curves.png; the plot
command overlays runs; from_pretrained and predict read the workdir; an evaluation-only run of a
converted checkpoint reproduces the run's last evaluation. Plus the plot's parsing on its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model_overrides.embed_dim=12', '--config.model_overrides.depths=(1,1)',
        '--config.model_overrides.num_heads=(1,2)']
PNG = b'\x89PNG\r\n\x1a\n'


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A four-step digits run of train.py."""
    w = tmp_path_factory.mktemp('run') / 'digits'
    _run(['train.py', f'--workdir={w}', '--config', 'configs/digits.py:runlocal', *TINY])
    return w


def test_train_py_writes_curves_and_the_plot_command_overlays_runs(workdir, tmp_path):
    assert (workdir / 'curves.png').read_bytes().startswith(PNG)
    other = tmp_path / 'other'
    other.mkdir()
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    (other / 'metrics.jsonl').write_text(''.join(
        json.dumps({k: (v * 0.5 if k in ('loss', 'eval_top1') else v) for k, v in r.items()}) + '\n'
        for r in records) + '{"step": 9, "loss": 1.0, "lr"')   # a line cut short by a kill
    out = tmp_path / 'plots' / 'both.png'
    proc = _run(['-m', 'swinv2_jax.plot', workdir, other, '--out', out])
    assert proc.stdout.strip() == str(out) and out.read_bytes().startswith(PNG)


def test_from_pretrained_and_predict_on_a_workdir(workdir, tmp_path):
    from PIL import Image

    import swinv2_jax
    from swinv2_jax.train import init_from
    model, variables, info = swinv2_jax.from_pretrained(str(workdir))
    params, _ = init_from.read_training_run(str(workdir))
    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply({'params': params}, x))
    # the digits config's evaluation preprocessing (configs/common.py)
    assert (info.input_size, info.crop_pct, info.mean, info.labels, info.task) == (
        (32, 32), 1.0, (0.5, 0.5, 0.5), None, 'classification')
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (32, 32), np.uint8), 'L').save(tmp_path / 'd.png')
    proc = _run(['-m', 'swinv2_jax.predict', workdir, tmp_path / 'd.png', '--json', '--top-k', '10'])
    record = json.loads(proc.stdout)
    assert sorted(t['label'] for t in record['top_k']) == [str(i) for i in range(10)]   # indices: no names
    assert abs(sum(t['prob'] for t in record['top_k']) - 1) < 1e-5


def test_eval_only_of_a_converted_checkpoint_reproduces_the_last_evaluation(workdir, tmp_path):
    import swinv2_jax
    model, variables, _ = swinv2_jax.from_pretrained(str(workdir))
    swinv2_jax.save_converted(tmp_path / 'converted', variables, model)
    _run(['train.py', f'--workdir={tmp_path / "eval"}', '--config', 'configs/digits.py', *TINY,
          '--config.eval_only', f'--config.init_from={tmp_path / "converted"}'])

    def last_eval(w):
        return [json.loads(line) for line in (w / 'metrics.jsonl').read_text().splitlines()
                if 'eval_top1' in line][-1]
    got, want = last_eval(tmp_path / 'eval'), last_eval(workdir)
    for key in ('eval_top1', 'eval_top5', 'eval_loss', 'eval_examples'):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_plot_curves_parsing():
    from swinv2_jax.plot import curves, run_labels
    records = [{'step': 0, 'num_params': 5}, {'step': 1, 'loss': 2.0, 'lr': 0.1, 'steps_per_sec': 3.0},
               {'step': 2, 'loss': float('nan'), 'lr': 0.2},
               {'step': 2, 'eval_top1': 0.5, 'ema_eval_top1': 0.6, 'eval_examples': 10, 'eval_seconds': 1.0}]
    assert curves(records) == {'loss': ([1], [2.0]), 'lr': ([1, 2], [0.1, 0.2]), 'eval_top1': ([2], [0.5]),
                               'ema_eval_top1': ([2], [0.6])}
    assert run_labels(['/a/x/run', '/b/y/run']) == ['x/run', 'y/run']
