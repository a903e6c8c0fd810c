"""benchmarks/hlo_profile.py: the trace is attributed to the right ops, kinds, parts and passes.

The pieces on hand-made input (HLO text, nested trace events, op_name paths), then the script end
to end on a two-stage C=16 model, with TensorFlow and ml_collections unimportable (GPU machines
often lack them): its JSON adds up and names the parts of the model. Also the pieces of
benchmarks/common.py the three scripts share.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import common  # noqa: E402  (benchmarks/common.py)
import hlo_profile  # noqa: E402  (benchmarks/hlo_profile.py)

# Runs a script as __main__ with these modules unimportable.
WITHOUT_TF = ("import runpy, sys\n"
              "for m in ('tensorflow', 'tensorflow_datasets', 'ml_collections'):\n"
              "    sys.modules[m] = None\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")

HLO = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[8,96]{1,0})->f32[96,8]{1,0}}

%fused_dot (p0: f32[8,96], p1: f32[96,96]) -> f32[8,96] {
  %p0 = f32[8,96]{1,0} parameter(0)
  %p1 = f32[96,96]{1,0} parameter(1)
  %n = f32[8,96]{1,0} multiply(%p0, %p0), metadata={op_name="jit(step)/jvp(SwinTransformerV2)/layers_0/blocks_0/norm2/mul"}
  ROOT %d = f32[8,96]{1,0} dot(%n, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/jvp(SwinTransformerV2)/layers_0/blocks_0/mlp/fc1/dot_general"}
}

%fused_t (p0.1: f32[8,96]) -> f32[96,8] {
  %p0.1 = f32[8,96]{1,0} parameter(0)
  ROOT %t = f32[96,8]{1,0} transpose(%p0.1), dimensions={1,0}, metadata={op_name="jit(step)/transpose(jvp(SwinTransformerV2))/layers_0/blocks_1/transpose"}
}

ENTRY %main (a: f32[8,96], w: f32[96,96]) -> f32[96,8] {
  %a = f32[8,96]{1,0} parameter(0)
  %w = f32[96,96]{1,0} parameter(1)
  %ynn_fusion.1 = f32[8,96]{1,0} fusion(%a, %w), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(step)/jvp(SwinTransformerV2)/layers_0/blocks_0/norm2/reduce_sum"}
  %e = f32[8,96]{1,0} exponential(%ynn_fusion.1), metadata={op_name="jit(step)/add"}
  ROOT %copy_fusion.2 = f32[96,8]{1,0} fusion(%e), kind=kLoop, calls=%fused_t
}
"""


def test_parse_hlo_kinds_and_sources():
    inst, comps = hlo_profile.parse_hlo(HLO)
    assert set(comps) == {'fused_dot', 'fused_t', 'main'}
    assert inst['ynn_fusion.1']['opcode'] == 'fusion' and inst['ynn_fusion.1']['calls'] == ['fused_dot']
    assert inst['ynn_fusion.1']['shape'] == 'f32[8,96]'
    kinds = {n: hlo_profile.op_kind(inst[n], comps) for n in ('ynn_fusion.1', 'e', 'copy_fusion.2')}
    assert kinds == {'ynn_fusion.1': 'matmul', 'e': 'elementwise', 'copy_fusion.2': 'layout'}
    # a matmul fusion is attributed to its dot, not to the LayerNorm XLA named it after
    src = hlo_profile.source_name(inst['ynn_fusion.1'], comps, 'matmul')
    assert hlo_profile.model_part(src) == 'mlp: fc1'
    # a fusion without metadata of its own takes its transpose's
    src = hlo_profile.source_name(inst['copy_fusion.2'], comps, 'layout')
    assert hlo_profile.model_part(src) == 'window partition, shift'
    assert hlo_profile.op_pass(src, 'train') == 'backward'
    assert hlo_profile.op_pass('jit(step)/add', 'train') == 'update'


@pytest.mark.parametrize('op_name,part', [
    ('jit(f)/jvp(SwinTransformerV2)/SwinTransformerV2.features/layers_2/blocks_3/attn/qkv/bwnc,chd->bwhnd/dot_general',
     'attn: qkv projection'),
    ('jvp(SwinTransformerV2)/x/layers_0/blocks_0/attn/attn.position_bias_matrix/attn.position_bias_table/cpb_mlp_0/dot_general',
     'attn: position bias'),
    ('jvp(SwinTransformerV2)/x/layers_0/blocks_0/attn/bwhnd,bwhmd->bwhnm/dot_general',
     'attn: core (cosine logits, softmax, matmuls)'),
    ('jvp(SwinTransformerV2)/x/layers_1/blocks_0/attn/proj/add', 'attn: output projection'),
    ('jvp(SwinTransformerV2)/x/layers_1/blocks_0/mlp/erf', 'mlp: GELU, dropout'),
    ('jvp(SwinTransformerV2)/x/layers_1/blocks_0/norm1/rsqrt', 'res-post-norms'),
    ('jvp(SwinTransformerV2)/x/layers_1/blocks_1/jit(_roll_static)/concatenate', 'window partition, shift'),
    ('jvp(SwinTransformerV2)/x/layers_1/downsample/reduction/dot_general', 'patch merging'),
    ('jvp(SwinTransformerV2)/SwinTransformerV2.features/patch_embed/proj/conv', 'patch embedding'),
    ('jvp(SwinTransformerV2)/SwinTransformerV2.head/dot_general', 'final norm, pooling, head'),
    ('jit(step)/sqrt', 'loss, optimizer, other'),
])
def test_model_part(op_name, part):
    assert hlo_profile.model_part(op_name) == part


def test_self_times_subtract_nested_ops_and_skip_other_modules():
    def ev(op, ts, dur, tid=1, module='jit_step'):
        return {'ph': 'X', 'ts': ts, 'dur': dur, 'pid': 1, 'tid': tid, 'name': op,
                'args': {'hlo_op': op, 'hlo_module': module}}
    events = [
        ev('while.1', 0, 100), ev('body_a', 10, 30), ev('body_b', 50, 20),   # a loop and its body
        ev('after', 100, 5),                                                  # starts as the loop ends
        ev('other_thread', 20, 40, tid=2),
        ev('not_ours', 0, 1000, tid=3, module='jit_other'),
        {'ph': 'X', 'ts': 0, 'dur': 500, 'pid': 1, 'tid': 1, 'name': 'ThunkExecutor::Execute'},
    ]
    got = dict(hlo_profile.self_times(events, 'jit_step'))
    assert got == {'while.1': 50.0, 'body_a': 30.0, 'body_b': 20.0, 'after': 5.0, 'other_thread': 40.0}


@pytest.mark.parametrize('mode', ['train', 'forward'])
def test_script_end_to_end(mode, tmp_path):
    cmd = [sys.executable, '-c', WITHOUT_TF, os.path.join(REPO, 'benchmarks', 'hlo_profile.py'), '--json-only',
           '--mode', mode,
           '--batch', '2', '--steps', '1', '--profile-steps', '1', '--top', '5', '--xla-options', 'default',
           '--trace-dir', str(tmp_path / 'trace'),
           '--override', 'embed_dim=16', '--override', 'depths=(2,2)', '--override', 'num_heads=(1,2)',
           '--override', 'img_size=64', '--override', 'window_size=4', '--override', 'num_classes=10']
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    total = out['op_ms_per_step']
    assert total > 0 and out['step_ms'] > 0
    for table in ('by_kind_ms', 'by_part_ms', 'by_pass_ms'):
        assert sum(out[table].values()) == pytest.approx(total, rel=1e-3, abs=1e-2), table
    assert out['by_kind_ms'].get('matmul', 0) > 0
    parts = set(out['by_part_ms'])
    assert {'attn: qkv projection', 'attn: core (cosine logits, softmax, matmuls)', 'mlp: fc1',
            'patch merging'} <= parts, parts
    assert set(out['by_pass_ms']) == ({'forward', 'backward', 'update'} if mode == 'train' else {'forward'})
    assert len(out['top_ops']) == 5
    assert out['top_ops'] == sorted(out['top_ops'], key=lambda r: -r['ms'])
    assert os.listdir(tmp_path / 'trace')
    assert out['cpu']['model'] and isinstance(out['cpu']['vector_extensions'], list)


def test_common_override_and_cpu_info():
    assert common.override_arg('depths=(1,1)') == ('depths', (1, 1))
    assert common.override_arg('dtype=bfloat16') == ('dtype', 'bfloat16')
    with pytest.raises(argparse.ArgumentTypeError, match='KEY=VALUE'):
        common.override_arg('depths')
    info = common.cpu_info()
    assert info['model'] and set(info['vector_extensions']) <= set(common.VECTOR_FLAGS)
    assert common.summary([3.0, 1.0, 2.0]) == {'median': 2.0, 'min': 1.0, 'max': 3.0}
