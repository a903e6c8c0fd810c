"""Where the time of a compiled SwinV2 step goes: a `jax.profiler` trace, attributed to HLO ops,
their kind and the part of the model they come from.

    python benchmarks/hlo_profile.py                                  # tiny/w8/256, batch 8, train step
    python benchmarks/hlo_profile.py --mode forward --xla-options default --top 15
    python benchmarks/hlo_profile.py --batch 2 --override embed_dim=32 --override 'depths=(1,1,1,1)'

It compiles the same training step as `throughput.py` (forward, cross-entropy, backward, AdamW,
parameters and optimizer state donated) or the forward pass, times a few calls without the
profiler, then traces a few more and reads the trace back. Each traced op event carries the name
of its HLO instruction; the compiled module's text gives that instruction's kind and the
`op_name` metadata JAX wrote (the Flax module path and the primitive), so each microsecond lands
in three tables:

* by kind: matmul (a dot or convolution, alone or in a fusion: YNNPACK/Eigen on the CPU, cuBLAS
  custom calls on a GPU), layout (a fusion or op that transposes or copies: what window
  partition, roll and the weight-gradient operand layouts cost), gather/scatter, reduction,
  elementwise;
* by part of the model (qkv projection, attention core, position bias, output projection, MLP
  fc1/fc2/GELU, res-post-norms, window partition and shift, patch merging, ...) and pass (forward,
  backward, optimizer update);
* the top ops, with their output shape and source.

Times are self times (a while loop's own event minus the ops inside it) summed over the traced
calls and divided by their count. On XLA:CPU independent ops run concurrently on the thread pool,
so the summed op time per step can exceed the wall time; the shares are of the summed op time.
A table, then one JSON line. Needs jax, flax, optax and this package only (no torch, no
TensorFlow); on a GPU it reads the device's kernel events the same way (not yet run there).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_info, make_train_step, override_arg, versions  # noqa: E402  (throughput.py's step)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='swinv2_tiny_window8_256', help='registered name (timm names)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
    p.add_argument('--mode', choices=('train', 'forward'), default='train')
    p.add_argument('--xla-options', choices=('auto', 'default', 'inference'), default='auto',
                   help="compiler options: 'auto' compiles as the project does (the forward pass with "
                        "compile_options.inference_compiler_options(), the train step with XLA's defaults)")
    p.add_argument('--no-keep-host-memory', action='store_true',
                   help="leave the host memory to glibc's defaults (by default it is kept as train.py "
                        'keeps it on the CPU: swinv2_jax.host_memory)')
    p.add_argument('--steps', type=int, default=3, help='timed calls without the profiler')
    p.add_argument('--profile-steps', type=int, default=2, help='traced calls')
    p.add_argument('--top', type=int, default=20, help='rows of the top-ops table')
    p.add_argument('--trace-dir', default=None,
                   help='keep the trace here (TensorBoard / Perfetto); a temporary folder otherwise')
    p.add_argument('--json-only', action='store_true', help='print only the final JSON line')
    p.add_argument('--override', action='append', default=[], type=override_arg, metavar='KEY=VALUE',
                   help='create_model override, the value read with ast.literal_eval (repeatable)')
    return p


# -- the compiled module ---------------------------------------------------------------------------

_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$')
_CALLS = re.compile(r'\b(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')


def parse_hlo(text: str) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, List[Dict[str, Any]]]]:
    """Instructions by name (opcode, shape, op_name, called computations, custom-call target) and
    the instructions of each computation, from `compiled.as_text()`."""
    instructions: Dict[str, Dict[str, Any]] = {}
    computations: Dict[str, List[Dict[str, Any]]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        if line and not line[0].isspace():   # a computation's header (or the module's line)
            m = _COMPUTATION.match(line)
            current = m.group(1) if m and not line.startswith('HloModule') else None
            if current is not None:
                computations[current] = []
            continue
        m = _INSTRUCTION.match(line)
        if not m or current is None:
            continue
        name, shape, opcode, rest = m.groups()
        op_name = _OP_NAME.search(rest)
        target = _TARGET.search(rest)
        inst = {'name': name, 'shape': re.sub(r'\{[^{}]*\}', '', shape).strip(), 'opcode': opcode,
                'op_name': op_name.group(1) if op_name else '', 'calls': _CALLS.findall(rest),
                'target': target.group(1) if target else '', 'computation': current}
        instructions[name] = inst
        computations[current].append(inst)
    return instructions, computations


def opcodes_within(inst: Dict[str, Any], computations: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """The opcodes an instruction runs: its own, or those of the computations a fusion calls."""
    if inst['opcode'] not in ('fusion', 'call'):
        return [inst['opcode']]
    out, stack, seen = [], list(inst['calls']), set()
    while stack:
        comp = stack.pop()
        if comp in seen:
            continue
        seen.add(comp)
        for i in computations.get(comp, ()):
            out.append(i['opcode'])
            if i['opcode'] in ('fusion', 'call'):
                stack.extend(i['calls'])
    return out


def op_kind(inst: Dict[str, Any], computations) -> str:
    ops = set(opcodes_within(inst, computations))
    target = inst['target'].lower()
    if ops & {'dot', 'convolution'} or any(t in target for t in ('gemm', 'matmul', 'cublas', 'cudnn', 'conv')):
        return 'matmul'
    if ops & {'transpose', 'copy'}:
        return 'layout'
    if ops & {'gather', 'scatter', 'dynamic-slice', 'dynamic-update-slice'}:
        return 'gather/scatter'
    if ops & {'reduce', 'reduce-window', 'sort'}:
        return 'reduction'
    if inst['opcode'] in ('while', 'conditional', 'call', 'custom-call', 'all-reduce', 'all-gather'):
        return 'other'
    return 'elementwise'


def source_name(inst: Dict[str, Any], computations, kind: str) -> str:
    """The op_name JAX wrote for an instruction. For a fusion, that of the op that gives it its kind
    (the dot of a matmul fusion, the transpose or copy of a layout fusion: XLA names a fusion after
    one of its ops, often the LayerNorm a matmul was fused with), else its own, else its root's."""
    wanted = {'matmul': ('dot', 'convolution'), 'layout': ('transpose', 'copy')}.get(kind, ())
    if inst['opcode'] in ('fusion', 'call') and wanted:
        stack, seen = list(inst['calls']), set()
        while stack:
            comp = stack.pop()
            if comp in seen:
                continue
            seen.add(comp)
            for i in computations.get(comp, ()):
                if i['opcode'] in wanted and i['op_name']:
                    return i['op_name']
                if i['opcode'] in ('fusion', 'call'):
                    stack.extend(i['calls'])
    if inst['op_name']:
        return inst['op_name']
    for comp in inst['calls']:
        for i in reversed(computations.get(comp, ())):
            if i['op_name']:
                return i['op_name']
    return ''


# Within a block (the op_name after `layers_i/blocks_j/`): the first pattern that matches, from
# the start of the path, names the part.
BLOCK_PARTS = (
    (r'.*(position_bias|cpb_mlp)', 'attn: position bias'),
    (r'.*logit_scale', 'attn: logit scale'),
    (r'attn/qkv', 'attn: qkv projection'),
    (r'attn/proj', 'attn: output projection'),
    (r'attn/', 'attn: core (cosine logits, softmax, matmuls)'),
    (r'mlp/fc1', 'mlp: fc1'),
    (r'mlp/fc2', 'mlp: fc2'),
    (r'mlp/', 'mlp: GELU, dropout'),
    (r'norm[12]', 'res-post-norms'),
    (r'(jit\(_roll|transpose|reshape|pad|slice|jit\(_pad|concatenate)', 'window partition, shift'),
    (r'(add|drop_path|DropPath|mul|select)', 'residual add, drop-path'),
)


def model_part(op_name: str) -> str:
    """The part of SwinV2 an op belongs to, read from the Flax module path in its op_name."""
    op_name = op_name.split(';')[0]
    m = re.search(r'layers_\d+/blocks_\d+/(.*)$', op_name)
    if m:
        return next((part for pattern, part in BLOCK_PARTS if re.match(pattern, m.group(1))), 'block: other')
    if re.search(r'layers_\d+/downsample/', op_name):
        return 'patch merging'
    if 'patch_embed' in op_name:
        return 'patch embedding'
    if 'SwinTransformerV2' in op_name or 'SwinV2' in op_name:
        return 'final norm, pooling, head'
    return 'loss, optimizer, other'


def op_pass(op_name: str, mode: str) -> str:
    if mode == 'forward':
        return 'forward'
    if 'transpose(jvp(' in op_name:
        return 'backward'
    if 'jvp(' in op_name:
        return 'forward'
    return 'update'


# -- the trace -------------------------------------------------------------------------------------

def self_times(events: List[Dict[str, Any]], module: str) -> Dict[str, float]:
    """Microseconds of each HLO op of `module`, less the time of the ops nested inside it (a while
    loop or a call thunk contains its body's ops), summed over the trace."""
    by_thread: Dict[Tuple[Any, Any], List[Dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        args = e.get('args') or {}
        if e.get('ph') == 'X' and 'dur' in e and args.get('hlo_op') and \
                (not args.get('hlo_module') or args['hlo_module'] == module):
            by_thread[(e.get('pid'), e.get('tid'))].append(e)
    out: Dict[str, float] = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e['ts']), -float(e['dur'])))
        stack: List[Tuple[float, str]] = []   # (end, op)
        for e in evs:
            ts, dur, op = float(e['ts']), float(e['dur']), e['args']['hlo_op']
            while stack and ts >= stack[-1][0]:
                stack.pop()
            if stack:
                out[stack[-1][1]] -= dur
            out[op] += dur
            stack.append((ts + dur, op))
    return out


def read_trace(trace_dir: str) -> List[Dict[str, Any]]:
    files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True),
                   key=os.path.getmtime)
    if not files:
        raise SystemExit(f'no *.trace.json.gz under {trace_dir}: the profiler wrote no trace')
    with gzip.open(files[-1]) as f:
        return json.load(f)['traceEvents']


# -- measure ---------------------------------------------------------------------------------------

def log(args, text: str) -> None:
    if not args.json_only:
        print(text, flush=True)


def parse_args(argv=None) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if min(args.batch, args.steps, args.profile_steps, args.top) < 1:
        raise SystemExit('--batch, --steps, --profile-steps and --top must be >= 1')
    overrides = dict(args.override)
    if 'dtype' in overrides:
        raise SystemExit('pass the computation dtype with --dtype, not --override dtype=...')
    return args, overrides


@dataclasses.dataclass
class Step:
    """A compiled forward pass or training step, its state, and the compiled module's text parsed."""
    name: str
    call: Callable[[Any], Any]        # state -> state, one synchronised call
    state: Any
    compiler_options: Dict[str, Any]
    host_memory_kept: Optional[Dict[str, Any]]
    compile_s: float
    module: str
    instructions: Dict[str, Dict[str, Any]]
    computations: Dict[str, List[Dict[str, Any]]]


def compile_step(args, overrides: Dict[str, Any]) -> Step:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from swinv2_jax import create_model, host_memory
    from swinv2_jax.compile_options import inference_compiler_options
    from swinv2_jax.models.registry import resolve_name

    kept = None if args.no_keep_host_memory else host_memory.keep_step_memory()   # before any JAX work
    name = resolve_name(args.model)
    model = create_model(name, **dict(overrides, drop_path_rate=0.0,
                                      dtype=jnp.bfloat16 if args.dtype == 'bfloat16' else jnp.float32))
    h, w = model.img_size
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, h, w, model.in_chans), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, max(model.num_classes, 1), size=(args.batch,)).astype(np.int32))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])['params']

    options = args.xla_options
    if options == 'auto':
        options = 'inference' if args.mode == 'forward' else 'default'
    compiler_options = inference_compiler_options() if options == 'inference' else {}

    if args.mode == 'forward':
        fn = jax.jit(lambda p, x: model.apply({'params': p}, x), compiler_options=compiler_options)
        state = (params,)

        def call(state):
            out = fn(state[0], x)
            out.block_until_ready()
            return state
        lowered = fn.lower(params, x)
    else:
        tx, train_step = make_train_step(model)
        fn = jax.jit(train_step, donate_argnums=(0, 1), compiler_options=compiler_options)
        state = (params, jax.jit(tx.init)(params))

        def call(state):
            p, o, loss = fn(state[0], state[1], x, y)
            loss.block_until_ready()
            return p, o
        lowered = fn.lower(*state, x, y)

    log(args, f'{name} {args.mode} batch {args.batch} {args.dtype} on {jax.devices()[0].device_kind} '
              f'(jax {jax.__version__}), XLA options: {compiler_options or "defaults"}, host memory '
              f'{"kept" if kept else "as glibc does"}')
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    text = compiled.as_text()
    instructions, computations = parse_hlo(text)
    module = text.split('\n', 1)[0].split()[1].rstrip(',')
    log(args, f'compiled in {compile_s:.1f} s: module {module}, {len(instructions)} instructions')
    return Step(name=name, call=call, state=state, compiler_options=compiler_options, host_memory_kept=kept,
                compile_s=compile_s, module=module, instructions=instructions, computations=computations)


def time_and_trace(step: Step, args) -> Tuple[float, Dict[str, float], str]:
    """(median wall seconds of --steps untraced calls, self microseconds per op over the
    --profile-steps traced calls, the trace directory)."""
    import jax
    import numpy as np

    # jit dispatches to the executable compiled above (same arguments, same options: cache hit)
    state = step.state
    for _ in range(2):
        state = step.call(state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state = step.call(state)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))

    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='hlo_profile_')
    jax.profiler.start_trace(trace_dir)
    try:
        for _ in range(args.profile_steps):
            state = step.call(state)
    finally:
        jax.profiler.stop_trace()
    selfs = self_times(read_trace(trace_dir), step.module)
    if not selfs:
        raise SystemExit(f'the trace under {trace_dir} has no op events of {step.module}')
    return step_s, selfs, trace_dir


def attribute(step: Step, selfs: Dict[str, float], calls: int, mode: str) -> List[Dict[str, Any]]:
    """One row per traced op: milliseconds per call, kind, part of the model, pass, shape, source."""
    rows = []
    for op, us in selfs.items():
        inst = step.instructions.get(op, {'name': op, 'shape': '?', 'opcode': '?', 'op_name': '', 'calls': [],
                                          'target': '', 'computation': '?'})
        kind = op_kind(inst, step.computations) if op in step.instructions else 'other'
        src = source_name(inst, step.computations, kind)
        rows.append({'op': op, 'ms': us / calls / 1e3, 'kind': kind,
                     'part': model_part(src), 'pass': op_pass(src, mode), 'shape': inst['shape'],
                     'source': re.sub(r'^jit\([^)]*\)/', '', src.split(';')[0])})
    return rows


# -- report ----------------------------------------------------------------------------------------

def totals(rows: List[Dict[str, Any]], key: str) -> Dict[str, float]:
    """Milliseconds per value of `key` (kind, part or pass), largest first."""
    acc: Dict[str, float] = collections.Counter()
    for r in rows:
        acc[r[key]] += r['ms']
    return {k: round(v, 3) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}


def print_tables(args, rows, step_s: float, unknown: List[str], trace_dir: str) -> None:
    total = sum(r['ms'] for r in rows)
    by_part_kind: Dict[str, Dict[str, float]] = collections.defaultdict(lambda: collections.Counter())
    for r in rows:
        by_part_kind[r['part']][r['kind']] += r['ms']
    log(args, f'\nstep {step_s * 1e3:.1f} ms wall (median of {args.steps}, {args.batch / step_s:.2f} img/s); '
              f'ops {total:.1f} ms per step summed over threads ({len(rows)} ops traced over '
              f'{args.profile_steps} calls)')
    coverage = total / (step_s * 1e3)
    if coverage < 0.9:
        log(args, f'note: op events cover {100 * coverage:.0f}% of the wall time. On XLA:CPU some ops run '
                  f'asynchronously (the Eigen matmuls of --xla-options inference) and are timed only until '
                  f'they are dispatched; --xla-options default times every op.')
    log(args, '\nby kind')
    for k, v in totals(rows, 'kind').items():
        log(args, f'  {k:16s} {v:9.1f} ms {100 * v / total:5.1f}%')
    log(args, '\nby part of the model' + ('' if args.mode == 'forward' else ' (forward + backward)'))
    for k, v in totals(rows, 'part').items():
        kinds = ', '.join(f'{kk} {100 * vv / v:.0f}%' for kk, vv in
                          sorted(by_part_kind[k].items(), key=lambda kv: -kv[1]) if vv >= 0.05 * v)
        log(args, f'  {k:46s} {v:9.1f} ms {100 * v / total:5.1f}%   ({kinds})')
    if args.mode == 'train':
        log(args, '\nby pass')
        for k, v in totals(rows, 'pass').items():
            log(args, f'  {k:16s} {v:9.1f} ms {100 * v / total:5.1f}%')
    top = sorted(rows, key=lambda r: -r['ms'])[:args.top]
    log(args, f'\ntop {len(top)} ops')
    for r in top:
        log(args, f'  {r["ms"]:8.2f} ms {100 * r["ms"] / total:5.1f}%  {r["kind"]:11s} {r["pass"]:8s} '
                  f'{r["op"]:28s} {r["shape"][:34]:34s} {r["source"][-90:]}')
    if unknown:
        log(args, f'\n{len(unknown)} traced ops not found in the compiled text (counted as other): {unknown[:5]}')
    log(args, f'\ntrace: {trace_dir}')


def build_report(args, step: Step, rows, step_s: float, trace_dir: str) -> Dict[str, Any]:
    import jax
    total = sum(r['ms'] for r in rows)
    top = sorted(rows, key=lambda r: -r['ms'])[:args.top]
    return {
        'model': step.name, 'mode': args.mode, 'batch': args.batch, 'dtype': args.dtype,
        'device': jax.devices()[0].device_kind, 'cpu': cpu_info(), 'jax': jax.__version__,
        'versions': versions('jax', 'jaxlib', 'flax', 'optax'), 'xla_options': step.compiler_options,
        'host_memory_kept': step.host_memory_kept,
        'compile_s': round(step.compile_s, 2), 'step_ms': round(step_s * 1e3, 2),
        'images_per_s': round(args.batch / step_s, 3), 'op_ms_per_step': round(total, 3),
        'op_coverage_of_wall': round(total / (step_s * 1e3), 3),
        'by_kind_ms': totals(rows, 'kind'), 'by_part_ms': totals(rows, 'part'), 'by_pass_ms': totals(rows, 'pass'),
        'top_ops': [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in top],
        'trace_dir': trace_dir,
    }


def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    step = compile_step(args, overrides)
    step_s, selfs, trace_dir = time_and_trace(step, args)
    rows = attribute(step, selfs, args.profile_steps, args.mode)
    unknown = sorted(op for op in selfs if op not in step.instructions)
    print_tables(args, rows, step_s, unknown, trace_dir)
    print(json.dumps(build_report(args, step, rows, step_s, trace_dir)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
