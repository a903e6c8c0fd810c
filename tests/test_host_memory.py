"""swinv2_jax.host_memory: a CPU step's temporaries are faulted in once, not on every call.

The setting is process-wide, so the behaviour is measured in fresh processes: a jitted program with
tens of MB of temporaries, called repeatedly; minor page faults counted around the later calls.
"""
import json
import os
import subprocess
import sys

import pytest

from swinv2_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason='the setting is glibc malloc tuning')

PROBE = r'''
import json, resource, sys
import jax, jax.numpy as jnp
from swinv2_jax import host_memory
kept = host_memory.keep_step_memory() if sys.argv[1] == 'keep' else None
# An MLP over a stage-0-sized token batch: its hidden activations are the temporaries.
f = jax.jit(lambda x, w1, w2: (jax.nn.gelu(x @ w1) @ w2).sum())
x, w1, w2 = jnp.full((32768, 96), 1e-3), jnp.full((96, 384), 1e-2), jnp.full((384, 96), 1e-2)
compiled = f.lower(x, w1, w2).compile()
for _ in range(2):
    compiled(x, w1, w2).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    compiled(x, w1, w2).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(json.dumps(dict(kept=kept, hidden_pages=32768 * 384 * 4 / resource.getpagesize(), faults=faults)))
'''


def _probe(mode):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', PROBE, mode], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_kept_steps_reuse_their_pages():
    default, kept = _probe('default'), _probe('keep')
    assert default['kept'] is None
    assert kept['kept'] == {'jax_cpu_enable_async_dispatch': False, 'M_MMAP_MAX': 0,
                            'M_TRIM_THRESHOLD': 'SIZE_MAX'}
    if default['faults'] < 0.5 * default['hidden_pages']:
        pytest.skip(f'this JAX/glibc already reuses the temporaries ({default}): nothing to keep')
    # Without the setting each call faults its 48 MiB of hidden activations in again; with it,
    # almost nothing.
    assert kept['faults'] < 0.05 * kept['hidden_pages'], (default, kept)


def test_nothing_is_set_once_backends_have_started(monkeypatch):
    import jax
    jax.devices()                                # this test process' backends are up
    calls = []
    monkeypatch.setattr(host_memory, '_glibc', lambda: calls.append('glibc'))
    monkeypatch.setattr(jax.config, 'update', lambda *a: calls.append(a))
    assert host_memory.keep_step_memory() is None
    assert calls == []                           # neither the dispatch flag nor malloc touched


def test_nothing_is_set_without_glibc(monkeypatch):
    monkeypatch.setattr(host_memory, '_backends_started', lambda: False)
    monkeypatch.setattr(host_memory, '_glibc', lambda: None)
    assert host_memory.keep_step_memory() is None
