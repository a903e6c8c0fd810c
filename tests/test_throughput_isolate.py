"""benchmarks/throughput.py --isolate, the parts that need no model: what each worker process is
started with (no thread policy for torch, the driver's own flags removed) and the table, whose
every row names the device and its vector extensions. The whole run is exercised by the README's
command (minutes: it builds and compiles both models)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import throughput  # noqa: E402  (benchmarks/throughput.py)


def test_workers_get_no_thread_policy(monkeypatch):
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')
    for who in throughput.CONTENDERS:
        assert 'OMP_WAIT_POLICY' not in throughput.worker_env(who)
    assert throughput.worker_env('jax')['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'  # torch shares the GPU


def test_jax_env_reaches_the_jax_worker_only(monkeypatch, capsys):
    monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
    args, _, _ = throughput.parse_args(['--isolate', '--jax-env', 'GLIBC_TUNABLES=glibc.malloc.hugetlb=1',
                                        '--jax-env', 'XLA_FLAGS=--xla_cpu_use_onednn=true'])
    jax_env = throughput.worker_env('jax', args.jax_env)
    assert jax_env['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
    assert jax_env['XLA_FLAGS'] == '--xla_cpu_use_onednn=true'
    for who in ('timm_eager', 'timm_compile'):
        torch_env = throughput.worker_env(who, args.jax_env)
        assert torch_env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2' and 'XLA_FLAGS' not in torch_env
    with pytest.raises(SystemExit):
        throughput.parse_args(['--isolate', '--jax-env', 'GLIBC_TUNABLES'])
    assert "--jax-env wants NAME=VALUE, got 'GLIBC_TUNABLES'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match='needs --isolate'):
        throughput.parse_args(['--jax-env', 'A=1'])
    with pytest.raises(SystemExit, match='is for --isolate'):   # torch would share the kept heap
        throughput.parse_args(['--no-keep-host-memory'])


def test_worker_command_line_drops_the_drivers_flags():
    argv = ['--isolate', '--batch', '8', '--modes', 'forward,train', '--override', 'embed_dim=32', '--modes=train']
    assert throughput.worker_argv(argv) == ['--batch', '8', '--override', 'embed_dim=32']


def test_isolated_table_names_the_cpu_on_every_row():
    cpu = {'model': 'Intel(R) Xeon(R) Platinum', 'cores': 2, 'vector_extensions': ['avx2', 'avx512f', 'amx_tile']}
    rate = lambda m: {'median': m, 'min': m - 1, 'max': m + 1}  # noqa: E731
    rep = {'model': 'swinv2_tiny_window8_256', 'overrides': {}, 'batch': 8, 'dtype': 'float32', 'repeats': 6,
           'iters': 1, 'command': 'python benchmarks/throughput.py --isolate', 'cpu': cpu,
           'results': {'train': {'jax': {'device': 'cpu: Xeon', 'images_per_s': rate(5.0), 'gflops': 180.0},
                                 'timm_eager': {'device': 'cpu: Xeon', 'images_per_s': rate(4.0), 'torch_threads': 2},
                                 'timm_compile': {'device': 'cpu: Xeon', 'error': 'RuntimeError: no compiler'}}},
           'ratios': {'train': {'jax_vs_timm_eager': 1.25, 'jax_vs_timm_compile': None}}}
    text = throughput.format_isolated(rep)
    rows = [line for line in text.splitlines() if line.startswith('train ')]
    assert len(rows) == 3
    assert all('Intel(R) Xeon(R) Platinum (2 cores; avx2 avx512f amx_tile)' in r for r in rows)
    assert '1.25x' in rows[0] and '1.00x' in rows[1] and 'n/a: RuntimeError: no compiler' in rows[2]
    assert 'torch threads 2' in rows[1] and 'command: python benchmarks/throughput.py --isolate' in text
