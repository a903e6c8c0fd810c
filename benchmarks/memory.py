#!/usr/bin/env python3
"""Memory of SwinV2's memory switches (remat policy, sequential window attention, bf16 compute),
measured without allocating a single activation.

Each combination of the switches is named `REMAT-SEQ-DTYPE`, e.g. `none-noseq-f32` (the plain
model), `full-seq-bf16`: REMAT is the `remat_policy` (none, full, dots, dots_no_batch), SEQ is `seq`
(sequential attention on `--seq-stages`, default 0,1, `--chunk` windows per step), `seqmlp` (the
same and the sequential MLP on those stages, `--mlp-chunk` tokens per step) or `noseq`, DTYPE
is the compute dtype (f32, or bf16 with float32 parameters). For each combination it reports:

(a) saved residuals: the bytes the backward pass keeps from the forward pass, i.e. the residuals
    of `jax.vjp` of the training loss (cross-entropy, train mode) with respect to the parameters,
    read off the traced jaxpr of `jax.vjp` on abstract `jax.ShapeDtypeStruct` inputs and
    `jax.eval_shape` parameters (what `jax.ad_checkpoint.print_saved_residuals` lists). Residuals
    that are the function's own inputs (parameters, images) or constants are not counted: they
    exist anyway. This is what remat controls, and it does not depend on the backend.
(b) compiled memory of the full training step (forward, backward, `optax.adamw` update, parameters
    and optimizer state donated): `jax.jit(step).lower(abstract args).compile().memory_analysis()`
    argument, output, temporary and aliased bytes, and total = argument + output + temp - alias
    (on CPU `peak_memory_in_bytes` omits temporaries). XLA:CPU's scheduler is not memory-aware:
    on CPU the compiled temporaries of a remat'd step barely move even where the saved residuals
    fall many-fold; on a GPU the compiled figure is the one to quote.
(c) compiled temporaries of ONE stage-0 block's forward + backward (a `SwinTransformerV2Block` at
    the stage-0 resolution, unshifted and shifted) with sequential attention off, on, and on
    together with the sequential MLP.

`--time` also measures the step time of each switch relative to the plain model, the variants timed
interleaved in one run, on a reduced model (default swinv2_tiny_window8_256 at batch 2).

The rows quoted in benchmarks/README.md:

    python benchmarks/memory.py                  # swinv2_base_window12to24_192to384, batch 8
    python benchmarks/memory.py --highres        # SwinV2-L 1536x1536 / window 32, batch 1
    python benchmarks/memory.py --compile-combos '*-noseq-f32,none-seq-f32,none-noseq-bf16'
    python benchmarks/memory.py --time --combos none --compile-combos none --no-block  # step time only
    python benchmarks/memory.py --giant          # SwinV2-G 1536/w32, batch 1, zero1 over 64 devices

Tracing the saved residuals is cheap; compiling a full training step of a large model is not
(benchmarks/README.md gives the costs seen): choose the compiled combinations with --compile-combos.

`--highres` is shorthand for `--model swinv2_large_window12_192 --img-size 1536 --window-size
(32,32,32,16) --pretrained-window-sizes (12,12,12,6) --override num_classes=1000 --batch 1`: at 1536
the stage feature maps are 384, 192, 96 and 48, and 48 is not a multiple of 32, so the last stage
runs window 16 (pass another --window-size to change it).

(d) `--state-devices N --sharding MODE`: the training state per device when the state is laid
    out over N devices by `swinv2_jax/train/sharding.py`'s rules for MODE (replicated, zero1, fsdp)
    on a real N-device mesh (N fake CPU devices: this script sets
    XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts), computed from the
    shardings' shard shapes of the abstract state: nothing is allocated. Parameters (float32),
    gradients (the parameters' layout: under zero1 each device holds the whole all-reduced
    gradient), AdamW state (mu and nu, float32), plus the saved residuals of each measured
    combination, plus the constants the step keeps (window masks, index tables), plus the
    largest one block needs while it is recomputed in the backward pass
    (its saved residuals without remat: the residuals of its stage under the combination's
    no-remat twin divided by the stage's depth), against a 40 GB A100 (40 GiB). Computed, not
    compiled: XLA's own temporaries and the CUDA context are not in it.

`--giant` is shorthand for `--model swinv2_giant_window12_192 --img-size 1536 --window-size
(32,32,32,16) --pretrained-window-sizes (12,12,12,6) --override num_classes=1000 --batch 1 --combos
full-seq-bf16,none-seq-bf16 --compile-combos none --no-block --state-devices 64 --sharding zero1`:
SwinV2-G (3.0B parameters) at the paper's 1536x1536 / window 32 with its switches (remat full,
sequential attention on stages 0-1, bf16) and ZeRO-1 over 64 GPUs, the paper's claim being that it
fits a 40 GB A100 (none-seq-bf16, the same without remat, gives one block's recomputation).
Its step is not compiled unless --compile-combos names a combination.

A table goes to stdout; the last line printed is one JSON object with every number. Imports only
jax, flax, optax, numpy and `swinv2_jax` (no TensorFlow).
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import re
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (cpu_info, is_segmentation, jax_device_name, literal, log, loss_fn,  # noqa: E402,F401
                    make_train_step, override_arg, versions)

REMAT = ('none', 'full', 'dots', 'dots_no_batch')
SEQ = ('noseq', 'seq', 'seqmlp')
DTYPES = ('f32', 'bf16')
COMBOS = tuple(f'{r}-{s}-{d}' for d in DTYPES for s in SEQ for r in REMAT)
PLAIN = 'none-noseq-f32'
DEFAULT_MODEL = 'swinv2_base_window12to24_192to384'
HIGHRES = dict(model='swinv2_large_window12_192', img_size=1536, window_size=(32, 32, 32, 16),
               pretrained_window_sizes=(12, 12, 12, 6), num_classes=1000, batch=1)
GIANT = dict(model='swinv2_giant_window12_192', img_size=1536, window_size=(32, 32, 32, 16),
             pretrained_window_sizes=(12, 12, 12, 6), num_classes=1000, batch=1,
             combos='full-seq-bf16,none-seq-bf16', compile_combos='none', state_devices=64, sharding='zero1')
A100_BYTES = 40 * 2 ** 30          # the A100 40GB: 40960 MiB
DEFAULT_COMPILE = 'none-noseq-f32,full-noseq-f32'
DEFAULT_TIME = ('none-noseq-f32,full-noseq-f32,dots-noseq-f32,dots_no_batch-noseq-f32,'
                'none-seq-f32,none-noseq-bf16,full-seq-bf16')
SWITCH_KEYS = ('remat_policy', 'sequential_attention', 'sequential_mlp', 'dtype')
GIB = 2.0 ** 30
# What the switches were built to reach: (name, numerator combo, denominator combo, minimum ratio,
# the row it is set for)
TARGETS = (
    ('remat_full_cuts_saved_residuals_3x', PLAIN, 'full-noseq-f32', 3.0,
     'swinv2_base_window12to24_192to384, batch 8'),
    ('sequential_cuts_saved_residuals_2x', PLAIN, 'none-seq-f32', 2.0,
     'high resolution, window 32, remat off'),
    ('bf16_halves_saved_residuals', PLAIN, 'none-noseq-bf16', 1.9,
     'any row ("halves": a ratio of at least 1.9)'),
)
CPU_NOTE = ('XLA:CPU does not schedule for memory: on CPU the compiled temporaries barely move with '
            'remat even where the saved residuals fall many-fold; on a GPU the compiled figure is the one '
            'to quote.')


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def select(patterns: str, universe: Sequence[str], what: str) -> List[str]:
    """The names of `universe` matching any of the comma-separated shell patterns, in its order.
    'none' or '' selects nothing; a pattern matching nothing is an error naming the valid names."""
    pats = [p.strip() for p in patterns.split(',') if p.strip()]
    if pats in ([], ['none']):
        return []
    bad = [p for p in pats if not fnmatch.filter(universe, p)]
    if bad:
        raise SystemExit(f'{what}: {", ".join(bad)} match no combination; valid: {", ".join(universe)} '
                         f'(shell patterns allowed, e.g. "*-f32" or "none-*")')
    return [u for u in universe if any(fnmatch.fnmatch(u, p) for p in pats)]


def combo_switches(combo: str, seq_stages: Tuple[int, ...]) -> Dict[str, Any]:
    """create_model overrides of a combination name."""
    import jax.numpy as jnp
    remat, seq, dt = combo.split('-')
    return dict(remat_policy=remat, sequential_attention=seq_stages if seq != 'noseq' else (),
                sequential_mlp=seq_stages if seq == 'seqmlp' else (),
                dtype=jnp.bfloat16 if dt == 'bf16' else jnp.float32)


def gib(n: Optional[float]) -> str:
    return '-' if n is None else f'{n / GIB:.3f}'


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if not a or not b else a / b


def nbytes(aval) -> int:
    return int(math.prod(aval.shape)) * np.dtype(aval.dtype).itemsize


def model_source_hash() -> str:
    """sha256 (12 hex digits) of the model package's sources (swinv2_jax/models/*.py, in name order):
    the numbers belong to that version of the model."""
    import glob
    import hashlib
    from swinv2_jax import models
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(os.path.dirname(models.__file__), '*.py'))):
        with open(path, 'rb') as f:
            digest.update(os.path.basename(path).encode() + b'\0' + f.read())
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# (a) Saved residuals
# ----------------------------------------------------------------------------------------------

def saved_residuals(f: Callable, *args) -> List[Tuple[Any, str, str]]:
    """The residuals `jax.vjp(f, *args)` keeps for the backward pass, without running anything.

    `args` may be abstract (`jax.ShapeDtypeStruct`). Returns (aval, kind, where) per distinct
    residual; kind is 'activation' (computed in the forward pass), 'argument' (one of f's own
    inputs), 'constant' or 'literal'; where is the producing equation's name stack (the Flax module
    path, e.g. '.../layers_0/blocks_1/attn') and primitive. The same classification as
    `jax.ad_checkpoint.print_saved_residuals`, on the public `jax.make_jaxpr`.
    """
    import jax
    from jax.extend.core import Literal
    closed, shapes = jax.make_jaxpr(lambda *a: jax.vjp(f, *a), return_shape=True)(*args)
    jaxpr = closed.jaxpr
    n_res = len(jax.tree_util.tree_leaves(shapes[1]))
    outvars = jaxpr.outvars[len(jaxpr.outvars) - n_res:] if n_res else []
    invars, constvars = set(jaxpr.invars), set(jaxpr.constvars)
    producer = {v: e for e in jaxpr.eqns for v in e.outvars}
    seen, out = set(), []
    for v in outvars:
        if isinstance(v, Literal):
            out.append((v.aval, 'literal', ''))
            continue
        if v in seen:
            continue
        seen.add(v)
        if v in invars:
            out.append((v.aval, 'argument', ''))
        elif v in constvars:
            out.append((v.aval, 'constant', ''))
        else:
            e = producer.get(v)
            where = '' if e is None else f'{e.source_info.name_stack} {e.primitive.name}'
            if e is not None and e.primitive.name == 'convert_element_type' and e.invars[0] in invars:
                where += ' (cast of an argument)'  # e.g. a bf16 copy of a float32 parameter
            out.append((v.aval, 'activation', where))
    return out


def abstract_params(model, in_chans: Optional[int] = None):
    import jax
    import jax.numpy as jnp
    h, w = model.img_size
    x = jax.ShapeDtypeStruct((1, h, w, in_chans or model.in_chans), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)['params']


def backbone_of(model):
    """The SwinTransformerV2 of a model: itself, or a segmentation model's backbone."""
    return model.backbone if is_segmentation(model) else model


def abstract_batch(model, batch: int):
    """Abstract images (float32 NHWC), integer labels (per image, or per pixel for a segmentation
    model) and a dropout seed."""
    import jax
    import jax.numpy as jnp
    h, w = model.img_size
    labels = (batch, h, w) if is_segmentation(model) else (batch,)
    return (jax.ShapeDtypeStruct((batch, h, w, model.in_chans), jnp.float32),
            jax.ShapeDtypeStruct(labels, jnp.int32),
            jax.ShapeDtypeStruct((), jnp.uint32))


def residual_report(model, batch: int) -> Dict[str, Any]:
    """Saved-residual bytes of the training loss w.r.t. the parameters, broken down by stage, part
    of the block (attn/mlp/norm) and dtype."""
    import jax
    t0 = time.perf_counter()
    params = abstract_params(model)
    x, y, seed = abstract_batch(model, batch)
    loss = loss_fn(model)
    # w.r.t. the parameters only: the images are not differentiated.
    res = saved_residuals(lambda p, x, y, s: loss(p, jax.lax.stop_gradient(x), y, s), params, x, y, seed)
    kinds: Dict[str, int] = {}
    by_stage: Dict[str, int] = {}
    by_part: Dict[str, int] = {}
    by_dtype: Dict[str, int] = {}
    casts = 0
    for aval, kind, where in res:
        b = nbytes(aval)
        kinds[kind] = kinds.get(kind, 0) + b
        if kind != 'activation':
            continue
        m = re.search(r'layers_(\d+)', where)
        head = re.search(r'(decode_head|auxiliary_head)', where)  # a segmentation model's heads
        stage = f'stage{m.group(1)}' if m else head.group(1) if head else 'other'
        part = next((p for p in ('attn', 'mlp', 'norm') if re.search(rf'/{p}\w*', where)), 'other')
        by_stage[stage] = by_stage.get(stage, 0) + b
        by_part[part] = by_part.get(part, 0) + b
        by_dtype[str(aval.dtype)] = by_dtype.get(str(aval.dtype), 0) + b
        if where.endswith('(cast of an argument)'):
            casts += b
    return dict(bytes=kinds.get('activation', 0), count=sum(1 for r in res if r[1] == 'activation'),
                argument_bytes=kinds.get('argument', 0), argument_cast_bytes=casts,
                constant_bytes=kinds.get('constant', 0),
                by_stage=dict(sorted(by_stage.items())), by_part=by_part, by_dtype=by_dtype,
                seconds=round(time.perf_counter() - t0, 2))


# ----------------------------------------------------------------------------------------------
# (b) Compiled memory of the full training step, (c) of one stage-0 block
# ----------------------------------------------------------------------------------------------

def memory_fields(compiled) -> Dict[str, Optional[int]]:
    m = compiled.memory_analysis()
    if isinstance(m, (list, tuple)):
        m = m[0] if m else None
    if m is None:
        return {}
    out = {}
    for key in ('argument', 'output', 'temp', 'alias', 'generated_code', 'peak_memory'):
        attr = key + '_size_in_bytes' if key != 'peak_memory' else 'peak_memory_in_bytes'
        v = getattr(m, attr, None)
        out[key] = None if v is None else int(v)
    if None not in (out['argument'], out['output'], out['temp'], out['alias']):
        out['total'] = out['argument'] + out['output'] + out['temp'] - out['alias']
    return out


def compiled_step_report(model, batch: int) -> Dict[str, Any]:
    import jax
    tx, step = make_train_step(model)
    params = abstract_params(model)
    opt_state = jax.eval_shape(tx.init, params)
    t0 = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, *abstract_batch(model, batch))
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    out = memory_fields(compiled)
    out.update(lower_seconds=round(t1 - t0, 2), compile_seconds=round(t2 - t1, 2))
    return out


def block_step_report(model, batch: int, shifted: bool, chunk: int, mlp_chunk: int = 0) -> Dict[str, Any]:
    """Compiled memory of the forward + backward (grads w.r.t. its parameters and input) of the
    stage-0 block (the first unshifted or shifted one) of `model`, float32 unless the model
    computes in another dtype; chunk (windows) and mlp_chunk (tokens) 0 are all at once."""
    import jax
    import jax.numpy as jnp
    from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2Block, window_and_shift
    res = model.stage_resolutions[0]
    win = tuple(model.window_size[0])
    window, shift = window_and_shift(res, win, (win[0] // 2, win[1] // 2) if shifted else (0, 0))
    block = SwinTransformerV2Block(
        dim=model.embed_dim, num_heads=model.num_heads[0], resolution=res, window=window, shift=shift,
        pretrained_window=tuple(model.pretrained_window_sizes[0]), mlp_ratio=model.mlp_ratio,
        attention_chunk=chunk, mlp_chunk=mlp_chunk, dtype=model.dtype, param_dtype=model.param_dtype)
    x = jax.ShapeDtypeStruct((batch, res[0], res[1], model.embed_dim), model.dtype)
    params = jax.eval_shape(block.init, jax.random.PRNGKey(0), x)

    def loss(p, x):
        return jnp.mean(jnp.square(block.apply(p, x).astype(jnp.float32)))
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, x).compile()
    out = memory_fields(compiled)
    nw = (res[0] // window[0]) * (res[1] // window[1])
    out.update(compile_seconds=round(time.perf_counter() - t0, 2), windows=nw, window=list(window),
               shift=list(shift), tokens_per_window=window[0] * window[1], heads=model.num_heads[0],
               chunk=chunk, mlp_chunk=mlp_chunk)
    return out


# ----------------------------------------------------------------------------------------------
# (d) The training state per device under a sharding mode
# ----------------------------------------------------------------------------------------------

def state_report(model, mode: str, num_devices: int) -> Dict[str, Any]:
    """Per-device bytes of parameters, gradients and AdamW state laid out over `num_devices` by
    the trainer's own rules (swinv2_jax.train.sharding), from the shard shapes: nothing allocated."""
    import jax
    from swinv2_jax.train import sharding
    if jax.device_count() < num_devices:
        raise SystemExit(f'--state-devices {num_devices}: JAX has {jax.device_count()} devices; start it '
                         f'with XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} (this script '
                         f'sets it when JAX has not started yet)')
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    tx, _ = make_train_step(model)
    params = abstract_params(model)
    state = {'step': jax.ShapeDtypeStruct((), np.int32), 'params': params,
             'opt_state': jax.eval_shape(tx.init, params)}
    shardings = sharding.state_shardings(state, mesh, mode)
    n_params = sum(int(math.prod(p.shape)) for p in jax.tree.leaves(params))
    p_dev = sharding.sharded_bytes_per_device(params, shardings['params'])
    o_dev = sharding.sharded_bytes_per_device(state['opt_state'], shardings['opt_state'])
    sharded = [s for s in jax.tree.leaves(shardings['opt_state']) if not s.is_fully_replicated]
    return dict(mode=mode, devices=num_devices, num_params=n_params,
                params_bytes=sharding.global_bytes(params), opt_state_bytes=sharding.global_bytes(state['opt_state']),
                params_bytes_per_device=p_dev, grads_bytes_per_device=p_dev, opt_state_bytes_per_device=o_dev,
                opt_state_sharded_leaves=len(sharded), opt_state_leaves=len(jax.tree.leaves(state['opt_state'])),
                how='computed from sharding.py shard shapes on a fake-device mesh (not compiled)')


def twin_without_remat(combo: str) -> str:
    return 'none-' + combo.split('-', 1)[1]


def largest_block_bytes(report: Dict[str, Any], depths: Sequence[int]) -> Tuple[int, str]:
    """The saved residuals of the largest block of a no-remat residual report (its stage's
    residuals over its depth; the stage's patch merging included)."""
    best, where = 0, ''
    for key, b in report['by_stage'].items():
        m = re.fullmatch(r'stage(\d+)', key)
        if m:
            per_block = b // depths[int(m.group(1))]
            if per_block > best:
                best, where = per_block, key
    return best, where


def fit_report(state: Dict[str, Any], residuals: Dict[str, Any], depths: Sequence[int]) -> Dict[str, Any]:
    """State + saved residuals + the constants the step keeps (window masks, index tables) + one
    block's recomputation, per device, against a 40 GB A100."""
    base = state['params_bytes_per_device'] + state['grads_bytes_per_device'] + state['opt_state_bytes_per_device']
    out = {}
    for combo, r in residuals.items():
        remat = combo.split('-')[0]
        twin = residuals.get(twin_without_remat(combo)) if remat != 'none' else None
        block, where = largest_block_bytes(twin, depths) if twin else (0, '')
        total = base + r['bytes'] + r['constant_bytes'] + block
        out[combo] = dict(state_bytes=base, saved_residual_bytes=r['bytes'], constant_bytes=r['constant_bytes'],
                          recompute_block_bytes=block,
                          recompute_block=where, total_bytes=total, a100_40gb_bytes=A100_BYTES,
                          fits_a100_40gb=total <= A100_BYTES,
                          recompute_block_note='' if remat == 'none' or twin else
                          f'not measured: add {twin_without_remat(combo)} to --combos')
    return out


# ----------------------------------------------------------------------------------------------
# Step time (--time)
# ----------------------------------------------------------------------------------------------

def time_report(name: str, overrides: Dict[str, Any], batch: int, combos: List[str],
                seq_stages: Tuple[int, ...], rounds: int, iters: int, quiet: bool) -> Dict[str, Any]:
    """Seconds per training step of each combination, timed interleaved: every round runs `iters`
    steps of each combination in turn; the ratio to the plain model is the median of the per-round
    ratios (so that a slow patch of the machine hits every variant alike)."""
    import jax
    import jax.numpy as jnp
    from swinv2_jax import create_model

    order = [PLAIN] + [c for c in combos if c != PLAIN]
    states, steps, compile_s = {}, {}, {}
    rng = np.random.default_rng(0)
    for combo in order:
        model = create_model(name, **{**overrides, **combo_switches(combo, seq_stages)})
        h, w = model.img_size
        x = jnp.asarray(rng.standard_normal((batch, h, w, model.in_chans)), jnp.float32)
        y = jnp.asarray(rng.integers(0, max(model.num_classes, 1), batch), jnp.int32)
        tx, step = make_train_step(model)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])['params']
        opt_state = jax.jit(tx.init)(params)
        t0 = time.perf_counter()
        fn = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x, y, jnp.uint32(0)).compile()
        compile_s[combo] = round(time.perf_counter() - t0, 2)
        params, opt_state, value = fn(params, opt_state, x, y, jnp.uint32(0))  # warm-up
        jax.block_until_ready(value)
        states[combo], steps[combo] = [params, opt_state, x, y], fn
        log(f'  timing: compiled {combo} in {compile_s[combo]:.1f} s', quiet)

    per_step = {c: [] for c in order}
    rel = {c: [] for c in order}
    for r in range(rounds):
        this_round = {}
        for combo in order:
            st, fn = states[combo], steps[combo]
            t0 = time.perf_counter()
            for i in range(iters):
                st[0], st[1], value = fn(st[0], st[1], st[2], st[3], jnp.uint32(r * iters + i + 1))
            jax.block_until_ready((st[0], value))
            this_round[combo] = (time.perf_counter() - t0) / iters
            per_step[combo].append(this_round[combo])
        for combo in order:
            rel[combo].append(this_round[combo] / this_round[PLAIN])
        log(f'  timing: round {r + 1}/{rounds} done', quiet)
    return dict(model=name, overrides={k: str(v) for k, v in overrides.items()}, batch=batch,
                rounds=rounds, iters=iters, compile_seconds=compile_s,
                seconds_per_step={c: statistics.median(v) for c, v in per_step.items()},
                relative_to_plain={c: statistics.median(v) for c, v in rel.items()},
                relative_min_max={c: [min(v), max(v)] for c, v in rel.items()},
                # fastest round against fastest round: robust to other load on a shared machine
                relative_fastest={c: min(v) / min(per_step[PLAIN]) for c, v in per_step.items()})


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--model', default=None, help=f'registered model name (default {DEFAULT_MODEL})')
    p.add_argument('--batch', type=int, default=None, help='images per device (default 8; 1 with --highres)')
    p.add_argument('--highres', action='store_true',
                   help='the 1536x1536 / window-32 row: SwinV2-L, windows (32,32,32,16) transferred from '
                        '(12,12,12,6), 1000 classes, batch 1 (explicit flags still win)')
    p.add_argument('--giant', action='store_true',
                   help='SwinV2-G at 1536x1536 / window 32 with the paper\'s switches (full-seq-bf16), batch '
                        '1, state sharded zero1 over 64 devices: residuals and state only (see (d))')
    p.add_argument('--state-devices', type=int, default=None,
                   help='(d): lay the training state out over this many devices (fake CPU ones)')
    p.add_argument('--sharding', default=None, help='(d): replicated, zero1 or fsdp (default zero1)')
    p.add_argument('--img-size', type=literal, default=None, help='int or (H, W)')
    p.add_argument('--window-size', type=literal, default=None, help='int, pair, or one per stage')
    p.add_argument('--pretrained-window-sizes', type=literal, default=None, help='int or one per stage')
    p.add_argument('--override', action='append', default=[], type=override_arg, metavar='KEY=VALUE',
                   help='create_model override (ast.literal_eval value), repeatable')
    p.add_argument('--seq-stages', type=literal, default=(0, 1),
                   help='stages of sequential attention in the "seq" combinations (default (0, 1))')
    p.add_argument('--chunk', type=int, default=None,
                   help='attention_chunk_size: windows per sequential step (default: the model\'s, 8)')
    p.add_argument('--mlp-chunk', type=int, default=None,
                   help='tokens per step of the sequential MLP (seqmlp combinations; default 8192)')
    p.add_argument('--combos', default=None,
                   help='combinations whose saved residuals to measure: comma-separated shell patterns '
                        f'over REMAT-SEQ-DTYPE names (default all {len(COMBOS)}; {GIANT["combos"]} with '
                        '--giant), e.g. "*-noseq-f32,none-*"')
    p.add_argument('--compile-combos', default=None,
                   help=f'combinations whose full training step to compile (default {DEFAULT_COMPILE}; '
                        '"none" for none, "*" for all: about a minute each for base-384 on a 2-core CPU)')
    p.add_argument('--no-block', action='store_true', help='skip (c), the one-block training step')
    p.add_argument('--time', action='store_true', help='also time the switches (reduced model)')
    p.add_argument('--time-model', default='swinv2_tiny_window8_256')
    p.add_argument('--time-batch', type=int, default=2)
    p.add_argument('--time-override', action='append', default=[], type=override_arg, metavar='KEY=VALUE')
    p.add_argument('--time-combos', default=DEFAULT_TIME, help=f'default {DEFAULT_TIME}')
    p.add_argument('--rounds', type=int, default=7, help='interleaved timing rounds')
    p.add_argument('--iters', type=int, default=2, help='steps per combination per round')
    p.add_argument('--json-only', action='store_true', help='print only the final JSON line')
    p.add_argument('--json-out', default=None, help='also write the JSON object to this file')
    return p


def model_overrides(args) -> Tuple[str, int, Dict[str, Any]]:
    if args.highres and args.giant:
        raise SystemExit('--highres and --giant are two different rows: pass one')
    preset = HIGHRES if args.highres else GIANT if args.giant else None
    name = args.model or (preset['model'] if preset else DEFAULT_MODEL)
    batch = args.batch or (preset['batch'] if preset else 8)
    ov: Dict[str, Any] = {}
    if preset:
        ov.update({k: preset[k] for k in ('img_size', 'window_size', 'pretrained_window_sizes', 'num_classes')})
    for key, flag in (('img_size', args.img_size), ('window_size', args.window_size),
                      ('pretrained_window_sizes', args.pretrained_window_sizes)):
        if flag is not None:
            ov[key] = flag
    ov.update(dict(args.override))
    if args.chunk is not None:
        ov['attention_chunk_size'] = args.chunk
    if args.mlp_chunk is not None:
        ov['mlp_chunk_tokens'] = args.mlp_chunk
    clash = [k for k in SWITCH_KEYS if k in ov]
    if clash:
        raise SystemExit(f'--override {", ".join(clash)}: these are set by each combination; select '
                         f'combinations with --combos / --compile-combos instead')
    return name, batch, ov


def resolve_args(args) -> None:
    """Fill in --giant's defaults and the combination defaults; give JAX the fake devices of (d)."""
    if args.giant:
        for key in ('combos', 'compile_combos', 'state_devices', 'sharding'):
            if getattr(args, key) is None:
                setattr(args, key, GIANT[key])
        args.no_block = True
    args.combos = '*' if args.combos is None else args.combos
    args.compile_combos = DEFAULT_COMPILE if args.compile_combos is None else args.compile_combos
    if args.sharding is not None and args.state_devices is None:
        raise SystemExit('--sharding needs --state-devices N (the devices to lay the state out over)')
    if args.state_devices is not None:
        args.sharding = args.sharding or 'zero1'
        if args.state_devices < 1:
            raise SystemExit('--state-devices must be >= 1')
        # fake CPU devices for the mesh: effective unless JAX has started already (state_report checks)
        flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
        os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={args.state_devices}'.strip()
    if args.time and (min(args.rounds, args.iters, args.time_batch) < 1):
        raise SystemExit('--rounds, --iters and --time-batch must be >= 1')


@dataclasses.dataclass
class Row:
    """One measured row: the model, its batch and overrides, and the result being filled in."""
    name: str
    batch: int
    overrides: Dict[str, Any]
    seq_stages: Tuple[int, ...]
    plain: Any                       # the model without switches
    result: Dict[str, Any]
    quiet: bool
    json_out: Optional[str]

    def model(self, combo: str):
        from swinv2_jax import create_model
        return create_model(self.name, **{**self.overrides, **combo_switches(combo, self.seq_stages)})

    def save_partial(self) -> None:
        """A run cut short (a time limit) still leaves what it measured."""
        if self.json_out:
            with open(self.json_out, 'w') as f:
                f.write(json.dumps(dict(self.result, partial=True), default=str) + '\n')


def start_row(args) -> Row:
    import jax
    from swinv2_jax import create_model
    from swinv2_jax.models.registry import model_fields

    name, batch, overrides = model_overrides(args)
    seq_stages = tuple(args.seq_stages) if isinstance(args.seq_stages, (tuple, list)) else (int(args.seq_stages),)
    plain = create_model(name, **overrides)  # validates the configuration before any work
    result: Dict[str, Any] = dict(
        benchmark='memory', backend=jax.default_backend(), device=jax_device_name(), jax=jax.__version__,
        cpu=cpu_info(), versions=versions('jax', 'jaxlib', 'flax', 'optax'),
        model_source_sha256=model_source_hash(),
        model=name, batch=batch, overrides={k: str(v) for k, v in overrides.items()},
        seq_stages=list(seq_stages), attention_chunk_size=backbone_of(plain).attention_chunk_size,
        mlp_chunk_tokens=backbone_of(plain).mlp_chunk_tokens,
        config={k: v for k, v in model_fields(plain).items() if k not in SWITCH_KEYS},
        units='bytes', residuals={}, compiled={}, block={}, state=None, fit={}, timing=None, targets={},
        notes=[])
    log(f'{name} batch {batch} on {result["device"]} (jax {jax.__version__})', args.json_only)
    return Row(name=name, batch=batch, overrides=overrides, seq_stages=seq_stages, plain=plain, result=result,
               quiet=args.json_only, json_out=args.json_out)


def measure_residuals(row: Row, combos: List[str]) -> None:
    """(a) the saved residuals of each combination."""
    for combo in combos:
        r = row.result['residuals'][combo] = residual_report(row.model(combo), row.batch)
        log(f'  residuals {combo}: {gib(r["bytes"])} GiB ({r["seconds"]:.1f} s)', row.quiet)
        row.save_partial()


def measure_compiled(row: Row, combos: List[str]) -> None:
    """(b) the compiled full training step of each combination."""
    for combo in combos:
        try:
            c = compiled_step_report(row.model(combo), row.batch)
        except Exception as exc:  # noqa: BLE001 - e.g. out of host memory while compiling: report it
            c = dict(error=f'{type(exc).__name__}: {str(exc)[:400]}')
        row.result['compiled'][combo] = c
        log(f'  compiled {combo}: total {gib(c.get("total"))} GiB, temp {gib(c.get("temp"))} GiB '
            f'(compile {c.get("compile_seconds", "-")} s)', row.quiet)
        row.save_partial()


def measure_blocks(row: Row) -> None:
    """(c) one stage-0 block, unshifted and shifted: sequential attention off, on, on with the MLP."""
    plain = backbone_of(row.plain)
    chunk, mlp_chunk = plain.attention_chunk_size, plain.mlp_chunk_tokens
    for shifted in (False, True):
        key = 'shifted' if shifted else 'unshifted'
        entry = {}
        for label, ch, mch in (('off', 0, 0), ('on', chunk, 0), ('on_mlp', chunk, mlp_chunk)):
            try:
                entry[label] = block_step_report(plain, row.batch, shifted, ch, mch)
            except Exception as exc:  # noqa: BLE001
                entry[label] = dict(error=f'{type(exc).__name__}: {str(exc)[:400]}')
        entry['temp_ratio'] = ratio(entry['off'].get('temp'), entry['on'].get('temp'))
        entry['temp_ratio_mlp'] = ratio(entry['off'].get('temp'), entry['on_mlp'].get('temp'))
        row.result['block'][key] = entry
        if entry['off'].get('shift') == [0, 0] and shifted:
            entry['note'] = 'the window covers the stage-0 map: no shift'
        log(f'  block ({key}) temps: off {gib(entry["off"].get("temp"))} GiB, seq attention '
            f'{gib(entry["on"].get("temp"))} GiB, + seq MLP {gib(entry["on_mlp"].get("temp"))} GiB', row.quiet)
        row.save_partial()


def measure_state(row: Row, mode: str, devices: int) -> None:
    """(d) the training state per device under a sharding mode, and what fits a 40 GB A100."""
    st = row.result['state'] = state_report(row.plain, mode, devices)
    log(f'  state over {st["devices"]} devices ({st["mode"]}): params {gib(st["params_bytes_per_device"])}, '
        f'opt {gib(st["opt_state_bytes_per_device"])} GiB per device', row.quiet)
    row.result['fit'] = fit_report(st, row.result['residuals'], backbone_of(row.plain).depths)
    row.save_partial()


def targets_report(row: Row) -> Dict[str, Any]:
    """Each target's measured ratio, whether it is met, and whether it is set for this row."""
    from swinv2_jax.models.registry import resolve_name
    res, plain, seq_stages = row.result['residuals'], backbone_of(row.plain), row.seq_stages
    max_window = max(max(w) for w in plain.window_size[:max(seq_stages) + 1]) if seq_stages else 0
    high_res = max_window >= 32  # the sequential-attention targets are set at window 32
    default_row = not is_segmentation(row.plain) and resolve_name(row.name) == DEFAULT_MODEL
    applies = {'remat_full_cuts_saved_residuals_3x': default_row,
               'sequential_cuts_saved_residuals_2x': high_res, 'bf16_halves_saved_residuals': True}
    targets: Dict[str, Any] = {}
    for tname, num, den, minimum, target_row in TARGETS:
        r = ratio(res.get(num, {}).get('bytes'), res.get(den, {}).get('bytes'))
        targets[tname] = dict(ratio=r, minimum=minimum, passed=None if r is None else r >= minimum,
                              applies_to_this_row=applies[tname],
                              numerator=num, denominator=den, target_row=target_row)
    seq_t = targets['sequential_cuts_saved_residuals_2x']
    seq_t['max_window_in_seq_stages'] = max_window
    if PLAIN in res and 'none-seq-f32' in res:
        # what sequential attention can reach at most: the stages it is not on keep their residuals
        stage_keys = [f'stage{i}' for i in seq_stages]
        in_stages = lambda r: sum(r['by_stage'].get(k, 0) for k in stage_keys)  # noqa: E731
        plain_b, seq_r = res[PLAIN]['bytes'], res['none-seq-f32']
        seq_t['seq_stages_only_ratio'] = ratio(in_stages(res[PLAIN]), in_stages(seq_r))
        seq_t['upper_bound_ratio'] = ratio(plain_b, plain_b - in_stages(res[PLAIN]))
        if 'none-seqmlp-f32' in res:
            seq_t['with_sequential_mlp_ratio'] = ratio(plain_b, res['none-seqmlp-f32']['bytes'])
    blk = row.result['block'].get('unshifted')
    r = blk and blk.get('temp_ratio')
    targets['sequential_cuts_block_temps_4x'] = dict(
        ratio=r, minimum=4.0, passed=None if r is None else r >= 4.0,
        applies_to_this_row=high_res,
        numerator='stage-0 unshifted block, sequential off', denominator='... on',
        target_row='high resolution, window 32',
        shifted_ratio=row.result['block'].get('shifted', {}).get('temp_ratio'),
        with_sequential_mlp_ratio=blk and blk.get('temp_ratio_mlp'))
    return targets


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_args(args)
    warnings.filterwarnings('ignore', message='.*donated buffers were not usable.*')
    warnings.filterwarnings('ignore', message='.*Some donated buffers were not usable.*')

    res_combos = select(args.combos, COMBOS, '--combos')
    comp_combos = select(args.compile_combos, COMBOS, '--compile-combos')
    time_combos = select(args.time_combos, COMBOS, '--time-combos') if args.time else []

    row = start_row(args)
    t_start = time.perf_counter()
    measure_residuals(row, res_combos)
    measure_compiled(row, comp_combos)
    if not args.no_block:
        measure_blocks(row)
    if args.state_devices is not None:
        measure_state(row, args.sharding, args.state_devices)
    if args.time:
        row.result['timing'] = time_report(args.time_model, dict(args.time_override), args.time_batch,
                                           time_combos, row.seq_stages, args.rounds, args.iters, row.quiet)
    result = row.result
    result['targets'] = targets_report(row)
    if result['backend'] == 'cpu' and (result['compiled'] or result['block']):
        result['notes'].append(CPU_NOTE)
    result['notes'].append('saved residuals exclude the parameters and images (inputs of the loss) and '
                           'constants; bf16 keeps the attention core (normalisation, logits, softmax) and '
                           'the LayerNorm statistics in float32, so its residuals are not exactly half.')
    result['seconds'] = round(time.perf_counter() - t_start, 1)

    if not row.quiet:
        print_tables(result)
    line = json.dumps(result, default=lambda o: o if not isinstance(o, np.generic) else o.item())
    if args.json_out:
        with open(args.json_out, 'w') as f:
            f.write(line + '\n')
    print(line, flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def print_residuals(result: Dict[str, Any]) -> None:
    res = result['residuals']
    base = res.get(PLAIN, {}).get('bytes')
    print('\n(a) saved residuals between forward and backward (GiB; params, images and constants not counted)')
    print('| combination | saved GiB | plain / this | attention GiB | float32 GiB | param casts GiB | per stage GiB |')
    print('|---|---:|---:|---:|---:|---:|---|')
    for combo, r in res.items():
        st = ', '.join(f'{k} {v / GIB:.2f}' for k, v in r['by_stage'].items())
        rr = ratio(base, r['bytes'])
        print(f'| {combo} | {gib(r["bytes"])} | {"-" if rr is None else f"{rr:.2f}x"} | '
              f'{gib(r["by_part"].get("attn", 0))} | {gib(r["by_dtype"].get("float32", 0))} | '
              f'{gib(r["argument_cast_bytes"])} | {st} |')


def print_compiled(result: Dict[str, Any]) -> None:
    print('\n(b) compiled full training step (forward, backward, AdamW; params and opt state donated), GiB')
    if result['backend'] == 'cpu':
        print(f'NOTE (CPU): {CPU_NOTE}')
    print('| combination | arguments | outputs | temporaries | aliased | total (arg+out+temp-alias) | compile s |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for combo, c in result['compiled'].items():
        if 'error' in c:
            print(f'| {combo} | error: {c["error"][:120]} |||||')
            continue
        print(f'| {combo} | {gib(c["argument"])} | {gib(c["output"])} | {gib(c["temp"])} | {gib(c["alias"])} | '
              f'{gib(c.get("total"))} | {c["compile_seconds"]:.0f} |')


def print_blocks(result: Dict[str, Any]) -> None:
    print('\n(c) one stage-0 block, forward + backward: compiled temporaries, sequential attention off / '
          'on / on with the sequential MLP')
    if result['backend'] == 'cpu':
        print('NOTE (CPU): compiled figures from XLA:CPU (see above).')
    print('| block | windows x tokens, heads | chunk (windows; MLP tokens) | temp off GiB | seq attention GiB '
          '| off / seq | + seq MLP GiB | off / both |')
    print('|---|---|---:|---:|---:|---:|---:|---:|')
    for key, e in result['block'].items():
        off, on, both = e['off'], e['on'], e['on_mlp']
        err = off.get('error') or on.get('error') or both.get('error')
        if err:
            print(f'| {key} | error: {err[:120]} |||||||')
            continue
        print(f'| {key} | {off["windows"]} x {off["tokens_per_window"]}, {off["heads"]} | {on["chunk"]}; '
              f'{both["mlp_chunk"]} | {gib(off["temp"])} | {gib(on["temp"])} | {e["temp_ratio"]:.2f}x | '
              f'{gib(both["temp"])} | {e["temp_ratio_mlp"]:.2f}x |')


def print_state(result: Dict[str, Any]) -> None:
    st = result['state']
    print(f'\n(d) training state per device: {st["num_params"] / 1e9:.3f}B parameters laid out {st["mode"]} over '
          f'{st["devices"]} devices by swinv2_jax/train/sharding.py ({st["opt_state_sharded_leaves"]} of '
          f'{st["opt_state_leaves"]} optimizer leaves sharded), GiB; {st["how"]}')
    print('| params (f32) | grads (f32) | AdamW mu+nu (f32) | AdamW unsharded |')
    print('|---:|---:|---:|---:|')
    print(f'| {gib(st["params_bytes_per_device"])} | {gib(st["grads_bytes_per_device"])} | '
          f'{gib(st["opt_state_bytes_per_device"])} | {gib(st["opt_state_bytes"])} |')
    if not result['fit']:
        return
    print('| combination | state | saved residuals | constants | one block recomputed | total | fits a 40 GB A100 |')
    print('|---|---:|---:|---:|---:|---:|---|')
    for combo, f in result['fit'].items():
        blk = (f'{gib(f["recompute_block_bytes"])} ({f["recompute_block"]})' if f['recompute_block']
               else f['recompute_block_note'] or '-')
        print(f'| {combo} | {gib(f["state_bytes"])} | {gib(f["saved_residual_bytes"])} | '
              f'{gib(f["constant_bytes"])} | {blk} | '
              f'{gib(f["total_bytes"])} | {"yes" if f["fits_a100_40gb"] else "no"} |')
    print('(computed, not compiled: XLA temporaries beyond one block, workspace and the CUDA context '
          'are not included)')


def print_timing(tm: Dict[str, Any]) -> None:
    print(f'\nstep time, {tm["model"]} batch {tm["batch"]} {tm["overrides"] or ""}: '
          f'{tm["rounds"]} interleaved rounds x {tm["iters"]} steps')
    print('| combination | s / step (median) | relative to plain: median of rounds [min, max] | fastest / fastest |')
    print('|---|---:|---|---:|')
    for c, s in tm['seconds_per_step'].items():
        lo, hi = tm['relative_min_max'][c]
        print(f'| {c} | {s:.4f} | {tm["relative_to_plain"][c]:.2f}x [{lo:.2f}, {hi:.2f}] | '
              f'{tm["relative_fastest"][c]:.2f}x |')


def print_targets(targets: Dict[str, Any]) -> None:
    print('\ntargets')
    for tname, t in targets.items():
        if t['passed'] is None:
            verdict = 'not measured'
        elif not t['applies_to_this_row']:
            verdict = f'(for information: {"met" if t["passed"] else "not met"}; the target is set for another row)'
        else:
            verdict = 'PASS' if t['passed'] else 'FAIL'
        rr = '-' if t['ratio'] is None else f'{t["ratio"]:.2f}x'
        print(f'  {tname}: {rr} (>= {t["minimum"]}x) {verdict}   [target set for: {t["target_row"]}]')
        if t.get('seq_stages_only_ratio'):
            print(f'      within the sequential stages {t["seq_stages_only_ratio"]:.2f}x; the most any '
                  f'sequential form of those stages can reach overall (their residuals all gone): '
                  f'{t["upper_bound_ratio"]:.2f}x')
        if t.get('with_sequential_mlp_ratio'):
            print(f'      with the sequential MLP on the same stages: {t["with_sequential_mlp_ratio"]:.2f}x')


def print_tables(result: Dict[str, Any]) -> None:
    print(f'\n# Memory: {result["model"]}, batch {result["batch"]}, {result["device"]}, jax {result["jax"]}, '
          f'model sources sha256 {result["model_source_sha256"]}')
    if result['overrides']:
        print(f'overrides: {result["overrides"]}')
    print(f'sequential attention: stages {result["seq_stages"]}, {result["attention_chunk_size"]} windows per step')
    if result['residuals']:
        print_residuals(result)
    if result['compiled']:
        print_compiled(result)
    if result['block']:
        print_blocks(result)
    if result.get('state'):
        print_state(result)
    if result['timing']:
        print_timing(result['timing'])
    print_targets(result['targets'])
    for n in result['notes']:
        print(f'note: {n}')
    print(f'({result["seconds"]:.0f} s)')


if __name__ == '__main__':
    sys.exit(main())
