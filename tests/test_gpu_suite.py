"""benchmarks/gpu_suite.py, the parts that run without a GPU: it stops at once and says why where
there is none; the model FLOPs behind its MFU equal a count by hand; the peak table matches device
names with the specific names first; the markdown table renders measured and failed rows.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import gpu_suite  # noqa: E402  (benchmarks/gpu_suite.py)


def test_fails_fast_without_a_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_suite.shutil, 'which', lambda name: None)
    with pytest.raises(SystemExit) as e:
        gpu_suite.main(['--out', str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'no usable NVIDIA GPU' in err and 'nvidia-smi not found' in err and '--dry-run' in err
    assert not list(tmp_path.iterdir())


def test_model_flops_equal_a_count_by_hand():
    """The dry-run model: 4 stages of 1 block, C=32..256, 64x64 images (16x16 tokens), window 4
    (2 in the last, 2x2 stage), 1000 classes; the CPB network runs once per batch, not per image."""
    batch = 2
    flops = gpu_suite.model_flops_per_image('swinv2_tiny_window8_256', batch, gpu_suite.DRY_RUN_OVERRIDES)
    per_image, per_batch = 2 * 256 * 32 * (3 * 4 * 4) + 2 * 32 * 8 * 1000, 0   # patch conv, head
    for i, heads in enumerate((1, 2, 4, 8)):
        c, side = 32 * 2 ** i, 16 // 2 ** i
        tokens, window = side * side, min(4, side)
        n, offsets = window * window, (2 * window - 1) ** 2
        if i:
            per_image += 2 * tokens * (2 * c) * c                      # merging 4 C/2 -> C
        per_image += 2 * tokens * c * (3 * c + c + 8 * c) + 4 * tokens * n * c   # qkv, proj, MLP; QK^T and AV
        per_batch += 2 * offsets * 512 * (2 + heads)                    # CPB: 2 -> 512 -> heads
    assert flops['forward'] == per_image + per_batch / batch
    assert 2.9 < flops['train'] / flops['forward'] < 3.0                # backward: twice the forward's products


@pytest.mark.parametrize('name, peak', [
    ('NVIDIA H100 80GB HBM3', 989.4), ('NVIDIA H100 PCIe', 756.0), ('NVIDIA H200', 989.4),
    ('NVIDIA A100-SXM4-80GB', 312.0), ('NVIDIA A10G', 70.0), ('NVIDIA L40S', 362.1), ('NVIDIA L4', 121.0),
    ('Tesla V100-SXM2-16GB', None),
])
def test_peak_table(name, peak):
    assert gpu_suite.peak_bf16_tflops(name) == peak


def test_markdown_table():
    rows = [dict(case='m', batch=4, mode='train', contender='timm_eager', images_per_s={'median': 100.0, 'min': 90.0,
                                                                                       'max': 110.0}),
            dict(case='m', batch=4, mode='train', contender='jax_default', images_per_s={'median': 150.0, 'min': 140.0,
                                                                                        'max': 160.0}),
            dict(case='m', batch=4, mode='train', contender='jax_cudnn', error='ValueError: needs | bf16')]
    gpu_suite.add_mfu(rows, {'m': {'train': 3e12}}, peak_tflops=1000.0)
    report = dict(device='NVIDIA H200', peak_bf16_tflops=1000.0, date='d', versions={'jax': '0'}, command='c',
                  rows=rows)
    text = gpu_suite.render_markdown(report)
    assert '| m | 4 | train | jax_default | 150.0 [140.0-160.0] | 1.50x | 450 | 45.0% |' in text
    assert '| m | 4 | train | timm_eager | 100.0 [90.0-110.0] | 1.00x | 300 | 30.0% |' in text
    assert '| m | 4 | train | jax_cudnn | n/a: ValueError: needs / bf16 |  |  |  |' in text


def test_dry_run_writes_the_json_and_the_table(tmp_path):
    """The whole pipeline on the CPU (both framework processes, one forward row each): the default
    core and timm eager measured, the cuDNN core reported as not applicable, with its reason."""
    import json
    import subprocess
    script = os.path.join(os.path.dirname(gpu_suite.__file__), 'gpu_suite.py')
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(script)))
    subprocess.run([sys.executable, script, '--dry-run', '--out', str(tmp_path), '--modes', 'forward',
                    '--repeats', '1', '--iters', '1', '--warmup', '0'], check=True, env=env, timeout=600,
                   capture_output=True)
    report = json.loads((tmp_path / 'gpu_suite.json').read_text())
    rows = {r['contender']: r for r in report['rows']}
    assert set(rows) == {'jax_default', 'jax_cudnn', 'timm_eager'}
    assert rows['jax_default']['images_per_s']['median'] > 0 and rows['timm_eager']['images_per_s']['median'] > 0
    assert 'NVIDIA GPU' in rows['jax_cudnn']['error']
    assert rows['jax_default']['model_tflops_per_s'] > 0 and report['model_flops_per_image']
    assert '| jax_default |' in (tmp_path / 'gpu_suite.md').read_text()
