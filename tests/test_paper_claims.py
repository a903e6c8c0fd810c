"""experiments/paper_claims.py: the amplitude measurement against a 2-block model computed by hand
in numpy from its parameters, the decision rules, and `--quick` end to end (every study, its files,
finite numbers, valid verdicts)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from experiments import amplitudes, verdicts
from swinv2_jax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = ('fig2_amplitudes', 'stability', 'table1_window_transfer', 'table6_ablation')


# ----------------------------------------------------------------------------------------------
# The amplitude measurement against a hand-computed 2-block model
# ----------------------------------------------------------------------------------------------

V1 = dict(norm_placement='pre', attention='dot', position_bias='table', qkv_bias='qkv', patch_merging='v1')
V2 = dict(norm_placement='res_post', attention='cosine', position_bias='log_cpb', qkv_bias='qv', patch_merging='v2')


def _two_block_model(switches):
    # 8x8 images, 4x4 patches: a 2x2 token map, one window of 2x2 (so no shift), two blocks, two heads
    return create_model('swinv2_digits_window4_32', img_size=8, embed_dim=8, depths=(2,), num_heads=(2,),
                        window_size=2, num_classes=0, drop_path_rate=0.0, **switches)


def _random_params(model, seed=0):
    """Every leaf random (norm scales around 1, one logit scale past the clamp) so that a wrong
    placement, order or formula changes the numbers."""
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *model.img_size, 3)))['params']
    rng = np.random.RandomState(seed)
    out = {}
    for path, v in traverse_util.flatten_dict(params).items():
        x = rng.normal(0, 0.5, v.shape)
        if path[-1] == 'scale':
            x = 1.0 + 0.3 * x
        if path[-1] == 'logit_scale':
            x = np.array([6.0, 1.5]).reshape(v.shape)   # exp(6) > 100: clamped; exp(1.5) not
        out[path] = jnp.asarray(x, jnp.float32)
    return traverse_util.unflatten_dict(out)


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']


def _gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def _bias_table(p, switches, heads):
    """[9, heads]: the bias of each relative offset (dh, dw) in {-1, 0, 1}^2, row-major."""
    if switches['position_bias'] == 'table':
        return p['relative_position_bias_table']
    offsets = np.array([(dh, dw) for dh in (-1, 0, 1) for dw in (-1, 0, 1)], np.float64)  # / (window - 1) = 1
    coords = np.sign(offsets) * np.log2(np.abs(offsets * 8) + 1) / 3.0
    hidden = np.maximum(coords @ p['cpb_mlp_0']['kernel'] + p['cpb_mlp_0']['bias'], 0)
    return 16 / (1 + np.exp(-(hidden @ p['cpb_mlp_2']['kernel'])))


def _attention(x, p, switches, heads):
    """x: [N, C] tokens of the one window (row-major 2x2)."""
    n, c = x.shape
    d = c // heads
    w = p['qkv']['kernel']
    b = p['qkv']['bias'] if switches['qkv_bias'] == 'qkv' else np.concatenate([p['q_bias'], np.zeros(c), p['v_bias']])
    q, k, v = (x @ w[:, i * c:(i + 1) * c] + b[i * c:(i + 1) * c] for i in range(3))
    table = _bias_table(p, switches, heads)
    pos = [(i // 2, i % 2) for i in range(n)]
    index = [[(pi[0] - pj[0] + 1) * 3 + (pi[1] - pj[1] + 1) for pj in pos] for pi in pos]
    out = []
    for h in range(heads):
        qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, k, v))
        if switches['attention'] == 'cosine':
            qh = qh / np.linalg.norm(qh, axis=-1, keepdims=True)
            kh = kh / np.linalg.norm(kh, axis=-1, keepdims=True)
            logits = qh @ kh.T * np.exp(min(p['logit_scale'][h, 0, 0], math.log(100)))
        else:
            logits = qh * d ** -0.5 @ kh.T
        logits = logits + np.array([[table[index[i][j], h] for j in range(n)] for i in range(n)])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        out.append(probs / probs.sum(-1, keepdims=True) @ vh)
    return np.concatenate(out, -1) @ p['proj']['kernel'] + p['proj']['bias']


def _hand_block_outputs(params, images, switches, heads=2):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(images, np.float64)
    kernel = p['patch_embed']['proj']['kernel']                       # [4, 4, 3, C]
    patches = x.reshape(x.shape[0], 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5)   # [B, 2, 2, 4, 4, 3]
    tokens = np.einsum('bijuvc,uvco->bijo', patches, kernel) + p['patch_embed']['proj']['bias']
    tokens = _ln(tokens, p['patch_embed']['norm']).reshape(x.shape[0], 4, -1)
    outs = []
    for j in range(2):
        bp = p['layers_0'][f'blocks_{j}']

        def mlp(t):
            return _gelu(t @ bp['mlp']['fc1']['kernel'] + bp['mlp']['fc1']['bias']) @ bp['mlp']['fc2']['kernel'] \
                + bp['mlp']['fc2']['bias']

        new = []
        for t in tokens:
            if switches['norm_placement'] == 'pre':
                t = t + _attention(_ln(t, bp['norm1']), bp['attn'], switches, heads)
                t = t + mlp(_ln(t, bp['norm2']))
            else:
                t = t + _ln(_attention(t, bp['attn'], switches, heads), bp['norm1'])
                t = t + _ln(mlp(t), bp['norm2'])
            new.append(t)
        tokens = np.stack(new)
        outs.append(tokens)
    return outs


@pytest.mark.parametrize('switches', [V1, V2], ids=['swin_v1', 'swinv2'])
def test_block_amplitudes_match_a_hand_computed_two_block_model(switches):
    model = _two_block_model(switches)
    params = _random_params(model)
    images = np.random.RandomState(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    got = amplitudes.block_amplitudes(model, {'params': params}, jnp.asarray(images))
    want = _hand_block_outputs(params, images, switches)
    assert got['block'] == ['layers_0/blocks_0', 'layers_0/blocks_1']
    np.testing.assert_allclose(got['mean_abs'], [np.abs(o).mean() for o in want], rtol=1e-4)
    np.testing.assert_allclose(got['max_abs'], [np.abs(o).max() for o in want], rtol=1e-4)
    assert abs(got['mean_abs'][1] - got['mean_abs'][0]) > 1e-2   # the blocks differ: order is tested


def test_post_norms_to_one_sets_only_the_block_norm_scales():
    model = _two_block_model(V2)
    params = _random_params(model)
    out = traverse_util.flatten_dict(amplitudes.post_norms_to_one(params))
    for path, v in traverse_util.flatten_dict(params).items():
        changed = path[-2] in ('norm1', 'norm2') and path[-1] == 'scale'
        np.testing.assert_array_equal(out[path], np.ones_like(v) if changed else v, err_msg='/'.join(path))
    assert amplitudes.discrepancy([0.5, 2.0, 1.0]) == 4.0


# ----------------------------------------------------------------------------------------------
# The decision rules
# ----------------------------------------------------------------------------------------------

def test_decision_rules():
    H, F, U = verdicts.HOLDS, verdicts.FAILS, verdicts.UNSURE
    assert [verdicts.amplitude_verdict(a, 10.0) for a in (25.0, 15.0, 10.0, 3.0)] == [H, U, F, F]
    assert verdicts.stability_verdict([False, True, True], [False, False, False]) == H
    assert verdicts.stability_verdict([False, False, True], [False, True, False]) == F   # V2 fails where V1 trains
    assert verdicts.stability_verdict([False, True, True], [False, True, True]) == F
    assert verdicts.stability_verdict([False] * 3, [False] * 3) == U
    assert verdicts.ordering_verdict(0.9, 0.88, 0.7, margin=0.05) == H
    assert verdicts.ordering_verdict(0.9, 0.7, 0.85, margin=0.05) == F      # the table beats linear
    assert verdicts.ordering_verdict(0.8, 0.9, 0.7, margin=0.05) == F       # linear beats log
    assert verdicts.ordering_verdict(0.9, 0.88, 0.87, margin=0.05) == U
    row = lambda m, s=0.01: {'mean': m, 'std': s}  # noqa: E731
    assert verdicts.ablation_verdict([row(0.80), row(0.83), row(0.84), row(0.86)]) == H
    assert verdicts.ablation_verdict([row(0.80), row(0.75), row(0.84), row(0.86)]) == F   # a step worsens
    assert verdicts.ablation_verdict([row(0.80), row(0.81), row(0.80), row(0.81)]) == U
    assert verdicts.combine([H, H]) == H and verdicts.combine([F, F]) == F and verdicts.combine([H, F]) == U
    assert verdicts.mean_std([0.8, 0.9])['std'] == pytest.approx(np.std([0.8, 0.9], ddof=1))


# ----------------------------------------------------------------------------------------------
# --quick end to end
# ----------------------------------------------------------------------------------------------

def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def test_quick_run_writes_every_study(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', 'paper_claims.py'), '--quick',
                           '--out', str(out), '--work', str(tmp_path / 'work')],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert list(results) == list(STUDIES)
    report = (out / 'report.md').read_text()
    for name, entry in results.items():
        assert entry['verdict'] in verdicts.VERDICTS, name
        assert entry['parts'] and all(v in verdicts.VERDICTS for v in entry['parts'].values()), name
        assert entry['rule'] in report and f'![{name}]({name}.png)' in report
        png = (out / f'{name}.png').read_bytes()
        assert png.startswith(b'\x89PNG') and len(png) > 5000, name
        numbers = list(_numbers(entry))
        assert numbers and all(math.isfinite(x) for x in numbers), name
    assert 'python experiments/paper_claims.py --quick' in report and 'jax ' in report
    amps = results['fig2_amplitudes']['models']
    assert len(amps) == 4 and all(len(m['pre']['mean_abs']) == len(m['pre']['block']) > 1 for m in amps.values())
    assert set(results['stability']['runs']) == {'pre-norm + dot product', 'res-post-norm + cosine'}
    assert all(len(r['losses']) > 1 for v in results['stability']['runs'].values() for r in v.values())
    t1 = results['table1_window_transfer']['direct']
    assert set(t1) == {'log-spaced CPB', 'linear-spaced CPB', 'parameterized table'}
    assert all(set(v) == {'48/w6', '64/w8', '96/w12'} for v in t1.values())
    rows = results['table6_ablation']['rows']
    assert list(rows) == ['Swin V1', '+ res-post-norm', '+ res-post-norm + scaled cosine', 'SwinV2']
    assert all(0.0 <= v <= 1.0 for row in rows.values() for v in row['top1'].values())
