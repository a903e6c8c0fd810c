#!/usr/bin/env python3
"""Throughput of this project's SwinV2 (JAX/Flax) against timm's (PyTorch eager and torch.compile).

One process measures, for each mode (`forward`, `train`):

* jax           -- this project: forward = jitted `model.apply(variables, x)`; train = one jitted step
                   (forward + cross-entropy + backward + optax.adamw update, params and optimizer
                   state donated; common.make_train_step);
* timm_eager    -- `timm.create_model(name, pretrained=False, drop_path_rate=0)`: forward in eval
                   mode under `torch.inference_mode()`; train = forward + F.cross_entropy + backward +
                   torch.optim.AdamW step in train mode;
* timm_compile  -- the same timm model under `torch.compile` (skipped with the reason in the output
                   if it fails; its compile time, the first call, is reported apart).

Both sides use the same weights (timm's random init, converted with `load_torch_weights`), and a
float32 forward sanity check prints the maximum relative difference between them. After warm-up the
contenders are timed alternately (jax, timm_eager, timm_compile, jax, ...) for --repeats rounds of
--iters calls each; the median images/s over rounds is reported with the min and max. Achieved
GFLOP/s uses the FLOPs of JAX's compiled executable (XLA cost analysis) for both sides, and is also
given as a fraction of a matrix-product ceiling (a jitted `a @ b`) measured in the same run.

That in-process mode is for profiling and the numerical check. `--isolate` is the comparison to
quote: each contender in its own process with its own library defaults (no thread policy, thread
count or precision flag set for torch; JAX with this project's forward compiler options), the
processes started one after the other and kept idle while another is timed, then alternated
round by round (jax, timm_eager, jax, timm_eager, ...), and the ratio of the medians reported.

The last line printed is one JSON object with every number. Imports only jax/flax/optax/numpy/
torch/timm and `swinv2_jax` (no TensorFlow). See benchmarks/README.md.

    python benchmarks/throughput.py --isolate --model swinv2_tiny_window8_256 --batch 8 --no-compile
    python benchmarks/throughput.py --model swinv2_tiny_window8_256 --batch 8
    python benchmarks/throughput.py --batch 2 --repeats 2 --iters 1 --no-compile \
        --override embed_dim=32 --override 'depths=(1,1,1,1)' --override 'num_heads=(1,2,4,8)'
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (LR, WEIGHT_DECAY, cpu_info, cpu_name, jsonable, log, make_train_step,  # noqa: E402
                    override_arg, short_error, summary, timed, versions)

CONTENDERS = ('jax', 'timm_eager', 'timm_compile')
MODES = ('forward', 'train')
# Overrides create_model takes that timm's SwinTransformerV2 takes under the same (or another) name.
TIMM_KEYS = {
    'num_classes': 'num_classes', 'img_size': 'img_size', 'window_size': 'window_size',
    'pretrained_window_sizes': 'pretrained_window_sizes', 'embed_dim': 'embed_dim', 'depths': 'depths',
    'num_heads': 'num_heads', 'mlp_ratio': 'mlp_ratio', 'patch_size': 'patch_size',
    'in_chans': 'in_chans', 'attn_drop_rate': 'attn_drop_rate',
    'drop_rate': 'proj_drop_rate',  # ours drops inside the blocks; timm's drop_rate is the head's
}
JAX_ONLY_KEYS = ('dtype', 'param_dtype')


# ----------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------

def cost_flops(compiled) -> Optional[float]:
    """FLOPs from an XLA cost analysis: a dict on new jax, a list of dicts on some older ones."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if cost is None:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get('flops')
    return float(flops) if flops is not None and flops > 0 else None


def jaxpr_matmul_flops(closed_jaxpr) -> float:
    """2*M*N*K over every dot_general and convolution of a (closed) jaxpr, sub-jaxprs included
    (scan bodies times their length): the matrix work, independent of the backend and of fusion."""
    from jax.extend import core as jcore

    def subjaxprs(value):
        if isinstance(value, jcore.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, jcore.Jaxpr):
            yield value
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from subjaxprs(v)

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            out = float(np.prod(eqn.outvars[0].aval.shape)) if eqn.outvars else 0.0
            if name == 'dot_general':
                (lhs_contract, _), _ = eqn.params['dimension_numbers']
                lhs = eqn.invars[0].aval.shape
                total += 2.0 * out * float(np.prod([lhs[d] for d in lhs_contract]))
            elif name == 'conv_general_dilated':
                rhs = eqn.invars[1].aval.shape
                spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, spatial...)
                total += 2.0 * out * float(np.prod([rhs[d] for d in spec[1:]]))
            subs = [j for v in eqn.params.values() for j in subjaxprs(v)]
            if not subs:
                continue
            if name == 'cond':
                total += max(count(j) for j in subs)
            else:
                mult = float(eqn.params.get('length', 1)) if name == 'scan' else 1.0
                total += mult * sum(count(j) for j in subs)
        return total

    return count(closed_jaxpr.jaxpr)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='swinv2_tiny_window8_256', help='registered name (timm names)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
    p.add_argument('--repeats', type=int, default=5, help='alternating timing rounds')
    p.add_argument('--iters', type=int, default=3, help='timed calls per contender per round')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls after compilation')
    p.add_argument('--modes', default='forward,train', help='comma-separated: forward,train')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile contender')
    p.add_argument('--default-xla-options', action='store_true',
                   help="compile the JAX forward pass with XLA's default options, not "
                        "swinv2_jax.compile_options.inference_compiler_options()")
    p.add_argument('--jax-env', action='append', default=[], type=env_arg, metavar='NAME=VALUE',
                   help='--isolate: set this in the JAX worker\'s environment only (e.g. XLA_FLAGS, '
                        'GLIBC_TUNABLES); repeatable. The torch workers keep the caller\'s')
    p.add_argument('--no-keep-host-memory', action='store_true',
                   help="--isolate: leave the JAX worker's host memory to glibc's defaults (by default "
                        'it keeps its steps\' temporaries mapped, as train.py does on the CPU: '
                        'swinv2_jax.host_memory)')
    p.add_argument('--compile-mode', default=None,
                   help='torch.compile mode (default, reduce-overhead, max-autotune); default: none')
    p.add_argument('--matmul-n', type=int, default=None,
                   help='side of the square matmul ceiling (default 2048 on CPU, 8192 on GPU)')
    p.add_argument('--torch-threads', type=int, default=None,
                   help='torch CPU threads (default: os.cpu_count()); JAX uses all cores')
    p.add_argument('--json-only', action='store_true', help='print only the final JSON line')
    p.add_argument('--isolate', action='store_true',
                   help='each contender in its own process with its own defaults, alternated round by '
                        'round (the figure to quote); without it, one process (for profiling)')
    p.add_argument('--worker', choices=CONTENDERS, default=None, help=argparse.SUPPRESS)
    p.add_argument('--override', action='append', default=[], type=override_arg, metavar='KEY=VALUE',
                   help='create_model override (value via ast.literal_eval), applied to both sides; '
                        'repeatable, e.g. --override embed_dim=32 --override "depths=(1,1,1,1)"')
    return p


def env_arg(text: str) -> Tuple[str, str]:
    """argparse `type=` for `--jax-env NAME=VALUE`."""
    name, sep, value = text.partition('=')
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f'--jax-env wants NAME=VALUE, got {text!r}')
    return name.strip(), value


def parse_args(argv=None) -> Tuple[argparse.Namespace, List[str], Dict[str, Any]]:
    """(args, modes, overrides), or SystemExit naming what is wrong."""
    args = build_parser().parse_args(argv)
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise SystemExit(f'--modes: unknown {bad}; choose from {",".join(MODES)}')
    if min(args.batch, args.repeats, args.iters) < 1 or args.warmup < 0:
        raise SystemExit('--batch, --repeats and --iters must be >= 1, --warmup >= 0')
    overrides = dict(args.override)
    if 'dtype' in overrides:
        raise SystemExit('pass the computation dtype with --dtype, not --override dtype=...')
    if args.jax_env and not (args.isolate or args.worker):
        raise SystemExit('--jax-env needs --isolate (one process holds both sides otherwise)')
    if args.no_keep_host_memory and not (args.isolate or args.worker):
        raise SystemExit('--no-keep-host-memory is for --isolate (the in-process mode keeps nothing: '
                         'torch shares its process)')
    if args.isolate and args.torch_threads:
        raise SystemExit('--isolate runs torch with its own thread count; drop --torch-threads')
    return args, modes, overrides


def set_environment() -> None:
    """Process settings that must precede importing torch and starting JAX (yours win if set)."""
    warnings.filterwarnings('ignore', message='.*donated buffers were not usable.*')
    # libgomp reads this when torch loads it. Its default (ACTIVE) keeps torch's idle OpenMP threads
    # spinning after each parallel region, stealing the cores the other contender is timed on.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    # On a GPU JAX would otherwise take 75% of its memory up front and leave torch the rest.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


# ----------------------------------------------------------------------------------------------
# Measure
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """What the measuring stages share, filled in stage by stage (devices, models, compiled JAX)."""
    args: argparse.Namespace
    modes: List[str]
    overrides: Dict[str, Any]
    # devices
    jax_backend: str = ''
    on_gpu: bool = False
    tdev: Any = None
    device_name: str = ''
    torch_device_name: str = ''
    bf16: bool = False
    # models and inputs
    name: str = ''
    model: Any = None
    jax_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    variables: Any = None
    n_params: int = 0
    x_jax: Any = None
    y_jax: Any = None
    x_t: Any = None
    y_t: Any = None
    tmodel: Any = None               # timm eager, None where timm has no such model
    cmodel: Any = None               # torch.compile of it, None where skipped or failed
    topt: Any = None
    compile_reason: Optional[str] = None
    compile_errors: Dict[str, str] = dataclasses.field(default_factory=dict)
    # compiled JAX
    fwd: Any = None
    fwd_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    jax_compiled: Dict[str, Any] = dataclasses.field(default_factory=dict)
    jax_compile_s: Dict[str, float] = dataclasses.field(default_factory=dict)
    flops: Dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    flops_source: Dict[str, str] = dataclasses.field(default_factory=dict)
    flops_both: Dict[str, Dict[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    train_state: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        return self.args.json_only

    def autocast(self):
        import torch
        return torch.autocast(self.tdev.type, dtype=torch.bfloat16, enabled=self.bf16)

    def tsync(self, _=None):
        import torch
        if self.on_gpu:
            torch.cuda.synchronize()


def setup_devices(run: Run) -> None:
    import jax
    import torch
    run.jax_backend = jax.default_backend()
    run.on_gpu = torch.cuda.is_available()
    run.tdev = torch.device('cuda' if run.on_gpu else 'cpu')
    if run.jax_backend == 'gpu' and not run.on_gpu:
        log('warning: JAX sees a GPU but torch does not: the comparison is not like for like', run.quiet)
    if run.on_gpu and run.jax_backend != 'gpu':
        log('warning: torch sees a GPU but JAX does not: the comparison is not like for like', run.quiet)
    if run.on_gpu:
        # TF32 for float32 matmuls/convs, as JAX's default precision allows on the GPU.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(run.args.torch_threads or os.cpu_count() or 1)
    run.device_name = (jax.devices()[0].device_kind if run.jax_backend != 'cpu'
                       else f'cpu: {cpu_name()} ({os.cpu_count()} cores)')
    run.torch_device_name = (torch.cuda.get_device_name(0) if run.on_gpu
                             else f'cpu ({torch.get_num_threads()} threads)')
    run.bf16 = run.args.dtype == 'bfloat16'


def build_models(run: Run) -> None:
    """The JAX model, the inputs, timm's model with the same weights, and its torch.compile."""
    import jax
    import jax.numpy as jnp
    import torch
    import timm

    from swinv2_jax import create_model
    from swinv2_jax.models.registry import model_config, resolve_name

    run.name = name = resolve_name(run.args.model)
    run.jax_overrides = dict(run.overrides, drop_path_rate=0.0)
    cfg = model_config(name, **run.jax_overrides)
    run.model = model = create_model(name, **dict(run.jax_overrides,
                                                  dtype=jnp.bfloat16 if run.bf16 else jnp.float32))
    timm_skip = None
    if int(cfg.get('extra_norm_every', 0) or 0):
        timm_skip = 'timm has no extra_norm_every (SwinV2-H/G layout)'
    elif name not in timm.list_models('swinv2*'):
        timm_skip = f'timm {timm.__version__} has no model {name!r}'
    ignored = sorted(k for k in run.overrides if k not in TIMM_KEYS and k not in JAX_ONLY_KEYS
                     and k not in ('drop_path_rate', 'extra_norm_every'))
    if ignored:
        log(f'note: overrides {ignored} are applied to the JAX model only', run.quiet)

    torch.manual_seed(0)
    b = run.args.batch
    h, w = model.img_size
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b, h, w, model.in_chans), dtype=np.float32)
    y_np = rng.integers(0, max(model.num_classes, 1), size=(b,)).astype(np.int32)
    run.x_jax = jax.device_put(jnp.asarray(x_np))
    run.y_jax = jax.device_put(jnp.asarray(y_np))
    run.x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(run.tdev)
    run.y_t = torch.from_numpy(y_np.astype(np.int64)).to(run.tdev)

    if timm_skip is None:
        run.tmodel, variables = build_timm(run)
    else:
        log(f'timm contenders skipped: {timm_skip}', run.quiet)
        variables = {'params': model.init(jax.random.PRNGKey(0), run.x_jax[:1])['params']}
    run.variables = jax.device_put(variables)
    run.n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(run.variables['params']))

    run.compile_reason = ('skipped (--no-compile)' if run.args.no_compile
                          else (timm_skip and f'skipped: {timm_skip}'))
    if run.tmodel is not None:
        run.topt = torch.optim.AdamW(run.tmodel.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        if not run.args.no_compile:
            try:
                run.cmodel = torch.compile(run.tmodel, mode=run.args.compile_mode)
            except Exception as exc:  # noqa: BLE001
                run.compile_reason = short_error(exc)
                log(f'torch.compile failed: {run.compile_reason}', run.quiet)


def build_timm(run: Run):
    """(timm model on the torch device, its weights converted to ours)."""
    import torch
    import timm

    from swinv2_jax import load_torch_weights

    timm_kwargs = {TIMM_KEYS[k]: v for k, v in run.overrides.items() if k in TIMM_KEYS}
    log(f'building timm {run.name} {timm_kwargs or ""}', run.quiet)
    tmodel = timm.create_model(run.name, pretrained=False, drop_path_rate=0.0, **timm_kwargs)
    # timm zero-initialises the res-post-norms (every block starts as the identity); give them
    # random scales so that the sanity check exercises the attention and MLP branches.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for pname, prm in tmodel.named_parameters():
            if pname.endswith(('norm1.weight', 'norm2.weight')):
                prm.copy_(1.0 + 0.2 * torch.randn(prm.shape, generator=gen))
            elif pname.endswith(('norm1.bias', 'norm2.bias')):
                prm.copy_(0.02 * torch.randn(prm.shape, generator=gen))
    variables = load_torch_weights({k: v.detach().cpu() for k, v in tmodel.state_dict().items()},
                                   run.model, layout='timm')
    return tmodel.to(run.tdev), variables


def compile_jax(run: Run) -> None:
    """Lower and compile each mode (timed apart from the runs) and count its FLOPs."""
    import jax
    import jax.numpy as jnp

    from swinv2_jax.compile_options import inference_compiler_options

    # the forward pass is compiled as the trainer's eval step is (swinv2_jax/compile_options.py:
    # Eigen's matmuls on XLA:CPU); --default-xla-options compiles it with XLA's defaults
    run.fwd_options = {} if run.args.default_xla_options else inference_compiler_options()
    run.fwd = jax.jit(run.model.apply, compiler_options=run.fwd_options)
    tx, train_step = make_train_step(run.model)
    step = jax.jit(train_step, donate_argnums=(0, 1))
    b = run.args.batch
    for mode in run.modes:
        log(f'jax: lowering and compiling {mode}', run.quiet)
        t0 = time.perf_counter()
        if mode == 'forward':
            lower_args = (run.variables, run.x_jax)
            lowered = run.fwd.lower(*lower_args)
        else:
            params = jax.tree_util.tree_map(jnp.copy, run.variables['params'])  # donated: keep ours
            run.train_state['params'] = params
            run.train_state['opt'] = jax.jit(tx.init)(params)
            lower_args = (run.train_state['params'], run.train_state['opt'], run.x_jax, run.y_jax)
            lowered = step.lower(*lower_args)
        compiled = lowered.compile()
        run.jax_compile_s[mode] = time.perf_counter() - t0
        run.jax_compiled[mode] = compiled
        # The compiled module's count (XLA cost analysis) is the work figure, but on the GPU it
        # leaves out the matrix products done in library calls (cuBLAS custom calls), and the lowered
        # module's count is not available there. So the matrix FLOPs are also counted from the jaxpr
        # (backend independent) and used whenever the compiled count falls below them.
        f_comp = cost_flops(compiled)
        f_mm = jaxpr_matmul_flops(jax.make_jaxpr(run.model.apply if mode == 'forward' else train_step)(*lower_args))
        run.flops_both[mode] = {'xla_compiled': f_comp, 'jaxpr_matmul': f_mm}
        if f_comp is not None and f_comp >= f_mm:
            f, run.flops_source[mode] = f_comp, 'xla_compiled'
        else:
            f, run.flops_source[mode] = f_mm, 'jaxpr_matmul (the compiled count was short or missing)'
        run.flops[mode] = f
        log(f'  {run.jax_compile_s[mode]:.1f} s, {f / b / 1e9 if f else float("nan"):.2f} GFLOP/image', run.quiet)


def max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))


def sanity_check(run: Run) -> Dict[str, Any]:
    """max|jax - timm| / max|timm| of the logits, float32 at the highest precision on both sides
    (and in bfloat16 with --dtype bfloat16)."""
    import jax
    import jax.numpy as jnp
    import torch

    from swinv2_jax import create_model

    sanity: Dict[str, Any] = {}
    if run.tmodel is None:
        return sanity
    log('sanity check: float32 forward, jax vs timm eager', run.quiet)
    run.tmodel.eval()
    if not run.bf16 and run.jax_backend == 'cpu' and 'forward' in run.jax_compiled:
        out_j = np.asarray(run.jax_compiled['forward'](run.variables, run.x_jax))  # float32 is exact on CPU
    else:
        model32 = run.model if not run.bf16 else create_model(run.name, **dict(run.jax_overrides, dtype=jnp.float32))
        with jax.default_matmul_precision('highest'):
            out_j = np.asarray(jax.jit(model32.apply)(run.variables, run.x_jax))
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        out_t = run.tmodel(run.x_t).float().cpu().numpy()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    sanity['forward_max_rel_diff_float32'] = max_rel(out_j, out_t)
    sanity['definition'] = 'max|jax - timm| / max|timm| over the logits'
    if run.bf16:
        with torch.inference_mode(), run.autocast():
            out_t = run.tmodel(run.x_t).float().cpu().numpy()
        f16 = run.jax_compiled.get('forward') or run.fwd
        out_j = np.asarray(f16(run.variables, run.x_jax)).astype(np.float32)
        sanity['forward_max_rel_diff_bfloat16'] = max_rel(out_j, out_t)
    log(f'  {sanity}', run.quiet)
    return sanity


def matmul_ceiling(run: Run) -> Dict[str, Any]:
    """GFLOP/s of a jitted `a @ b` and of `torch.mm` on n x n in the run's dtype, timed as the models."""
    import jax
    import jax.numpy as jnp
    import torch

    args = run.args
    jdtype = jnp.bfloat16 if run.bf16 else jnp.float32
    tdtype = torch.bfloat16 if run.bf16 else torch.float32
    n = args.matmul_n or (8192 if (run.on_gpu or run.jax_backend == 'gpu') else 2048)
    log(f'matmul ceiling: {n}x{n} {args.dtype}', run.quiet)
    ka, kb = jax.random.split(jax.random.PRNGKey(1))
    a_j = jax.random.normal(ka, (n, n), jnp.float32).astype(jdtype)
    b_j = jax.random.normal(kb, (n, n), jnp.float32).astype(jdtype)
    mm = jax.jit(lambda a, c: a @ c).lower(a_j, b_j).compile()
    a_t = torch.randn(n, n, device=run.tdev, dtype=torch.float32).to(tdtype)
    b_t = torch.randn(n, n, device=run.tdev, dtype=torch.float32).to(tdtype)
    mm_calls = {'jax': (lambda: mm(a_j, b_j), jax.block_until_ready),
                'torch': (lambda: torch.mm(a_t, b_t), run.tsync)}
    for fn, sync in mm_calls.values():
        for _ in range(max(args.warmup, 1)):
            sync(fn())
    mm_rates: Dict[str, List[float]] = {k: [] for k in mm_calls}
    mm_iters = max(args.iters, 3)
    for _ in range(args.repeats):
        for k, (fn, sync) in mm_calls.items():
            sec = timed(fn, sync, mm_iters)
            mm_rates[k].append(2.0 * n ** 3 * mm_iters / sec / 1e9)
    ceiling = {'n': n, 'dtype': args.dtype,
               'jax_gflops': summary(mm_rates['jax']), 'torch_gflops': summary(mm_rates['torch'])}
    log(f'  jax {ceiling["jax_gflops"]["median"]:.1f} GFLOP/s, torch {ceiling["torch_gflops"]["median"]:.1f} GFLOP/s',
        run.quiet)
    return ceiling


def jax_call(run: Run, mode: str):
    """(call, sync) of the compiled JAX mode; the train step carries its donated state along."""
    import jax
    compiled = run.jax_compiled[mode]
    if mode == 'forward':
        return (lambda: compiled(run.variables, run.x_jax)), jax.block_until_ready

    def call():
        p, o, loss = compiled(run.train_state['params'], run.train_state['opt'], run.x_jax, run.y_jax)
        run.train_state['params'], run.train_state['opt'] = p, o
        return p, o, loss
    return call, jax.block_until_ready


def torch_call(run: Run, mode: str, net):
    """(call, sync) of a timm model (eager or compiled) in a mode."""
    import torch
    import torch.nn.functional as F
    if mode == 'forward':
        def call():
            with torch.inference_mode(), run.autocast():
                return net(run.x_t)
        return call, run.tsync

    def call():
        run.topt.zero_grad(set_to_none=True)
        with run.autocast():
            loss = F.cross_entropy(net(run.x_t), run.y_t)
        loss.backward()
        run.topt.step()
        return loss
    return call, run.tsync


def warm_up(run: Run, mode: str) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(calls, results so far): every contender's first call (timed) and --warmup more."""
    calls: Dict[str, Any] = {}
    res: Dict[str, Dict[str, Any]] = {}
    contenders = [('jax', jax_call(run, mode))]
    if run.tmodel is not None:
        contenders.append(('timm_eager', torch_call(run, mode, run.tmodel)))
    for k, (fn, sync) in contenders:
        t0 = time.perf_counter()
        sync(fn())
        res[k] = {'compile_s': run.jax_compile_s[mode] if k == 'jax' else None,
                  'first_call_s': time.perf_counter() - t0}
        for _ in range(run.args.warmup):
            sync(fn())
        calls[k] = (fn, sync)
    if run.cmodel is not None:
        fn, sync = torch_call(run, mode, run.cmodel)
        try:
            log('torch.compile: first call (compiles)', run.quiet)
            t0 = time.perf_counter()
            sync(fn())
            first = time.perf_counter() - t0
            for _ in range(run.args.warmup):
                sync(fn())
            res['timm_compile'] = {'compile_s': first, 'first_call_s': first}
            calls['timm_compile'] = (fn, sync)
            log(f'  {first:.1f} s', run.quiet)
        except Exception as exc:  # noqa: BLE001
            run.compile_errors[mode] = short_error(exc)
            res['timm_compile'] = {'error': run.compile_errors[mode]}
            log(f'torch.compile failed in {mode}: {run.compile_errors[mode]}', run.quiet)
            if not run.quiet:
                traceback.print_exc(file=sys.stderr)
            run.topt.zero_grad(set_to_none=True)
    elif run.tmodel is not None:
        res['timm_compile'] = {'error': run.compile_reason or 'skipped'}
    return calls, res


def time_mode(run: Run, mode: str, ceiling: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Optional[float]]]:
    """(results per contender, ratios) of one mode: --repeats rounds, the contenders in turn."""
    log(f'== {mode} ==', run.quiet)
    if run.tmodel is not None:
        run.tmodel.train(mode == 'train')
    calls, res = warm_up(run, mode)
    gc.collect()
    b, iters = run.args.batch, run.args.iters
    rates: Dict[str, List[float]] = {k: [] for k in calls}
    for r in range(run.args.repeats):
        for k, (fn, sync) in calls.items():
            rates[k].append(b * iters / timed(fn, sync, iters))
        log(f'  round {r + 1}/{run.args.repeats}: '
            + ', '.join(f'{k} {v[-1]:.2f} img/s' for k, v in rates.items()), run.quiet)

    f_img = run.flops[mode] / b if run.flops[mode] else None
    for k, v in rates.items():
        s = summary(v)
        entry = res[k]
        entry.update({'images_per_s': s, 'per_round_images_per_s': v})
        if f_img:
            gfl = f_img * s['median'] / 1e9
            entry['gflops'] = gfl
            entry['fraction_of_jax_matmul_ceiling'] = gfl / ceiling['jax_gflops']['median']
            entry['fraction_of_torch_matmul_ceiling'] = gfl / ceiling['torch_gflops']['median']
    ratios: Dict[str, Optional[float]] = {}
    for other in ('timm_eager', 'timm_compile'):
        if other in rates:
            ratios[f'jax_vs_{other}'] = statistics.median(rates['jax']) / statistics.median(rates[other])
            # the same, paired round by round (the contenders of a round ran back to back)
            ratios[f'jax_vs_{other}_paired_median'] = statistics.median(
                a / c for a, c in zip(rates['jax'], rates[other]))
        else:
            ratios[f'jax_vs_{other}'] = None
    return res, ratios


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def build_report(run: Run, sanity, ceiling, results, ratios) -> Dict[str, Any]:
    import torch
    args, b = run.args, run.args.batch
    return {
        'model': run.name, 'overrides': {k: jsonable(v) for k, v in run.overrides.items()},
        'params': run.n_params, 'batch': b, 'dtype': args.dtype, 'img_size': list(run.model.img_size),
        'repeats': args.repeats, 'iters': args.iters, 'warmup': args.warmup, 'modes': run.modes,
        'backend': {'jax': run.jax_backend, 'torch': run.tdev.type},
        'device': run.device_name, 'torch_device': run.torch_device_name, 'cpu': cpu_info(),
        'precision': ('float32 at default precision on both sides (TF32 allowed on the GPU)' if not run.bf16
                      else 'bfloat16 compute, float32 params (JAX dtype=bfloat16; torch autocast)'),
        'versions': versions('jax', 'jaxlib', 'flax', 'optax', 'torch', 'timm', 'numpy'),
        'env': {'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY'), 'torch_threads': torch.get_num_threads(),
                'cpu_count': os.cpu_count(), 'XLA_FLAGS': os.environ.get('XLA_FLAGS'),
                'jax_forward_compiler_options': run.fwd_options,
                'XLA_PYTHON_CLIENT_PREALLOCATE': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')},
        'flops_per_image': {m: (run.flops[m] / b if run.flops[m] else None) for m in run.modes},
        'flops_source': run.flops_source,
        'flops_per_image_by_source': {m: {k: (v / b if v else None) for k, v in d.items()}
                                      for m, d in run.flops_both.items()},
        'matmul_ceiling': ceiling,
        'sanity': sanity,
        'torch_compile': {'mode': args.compile_mode,
                          'status': run.compile_reason or ('ok' if not run.compile_errors else 'failed'),
                          'errors': run.compile_errors},
        'results': results,
        'ratios': ratios,
    }


def format_table(rep: Dict[str, Any]) -> str:
    lines = []
    ov = ' '.join(f'{k}={v}' for k, v in rep['overrides'].items())
    lines.append(f"SwinV2 throughput: {rep['model']}{' (' + ov + ')' if ov else ''}, {rep['params'] / 1e6:.2f}M params, "
                 f"batch {rep['batch']}, {rep['img_size'][0]}x{rep['img_size'][1]}, {rep['dtype']}")
    lines.append(f"device: {rep['device']} | torch: {rep['torch_device']} | "
                 + ', '.join(f'{k} {v}' for k, v in rep['versions'].items()))
    c = rep['matmul_ceiling']
    lines.append(f"matmul ceiling ({c['n']}x{c['n']} {c['dtype']}): jax {c['jax_gflops']['median']:.1f} GFLOP/s "
                 f"[{c['jax_gflops']['min']:.1f}-{c['jax_gflops']['max']:.1f}], torch {c['torch_gflops']['median']:.1f} "
                 f"GFLOP/s [{c['torch_gflops']['min']:.1f}-{c['torch_gflops']['max']:.1f}]")
    fl = ', '.join(f"{m} {v / 1e9:.3f}" if v else f'{m} n/a' for m, v in rep['flops_per_image'].items())
    src = ', '.join(f"{m}: {v.split(' ')[0]}" for m, v in rep['flops_source'].items())
    lines.append(f"GFLOP/image (counted on the JAX programs, {src}; used for every contender): {fl}")
    for k, v in rep['sanity'].items():
        if k != 'definition':
            lines.append(f'sanity {k}: {v:.3g}')
    lines.append('')
    head = ('contender', 'mode', 'images/s median [min-max]', 'vs timm eager', 'GFLOP/s', '% ceiling', 'compile s')
    rows = []
    for mode, res in rep['results'].items():
        eager = res.get('timm_eager', {}).get('images_per_s', {}).get('median')
        for k in CONTENDERS:
            if k not in res:
                continue
            e = res[k]
            if 'error' in e:
                rows.append((k, mode, 'n/a: ' + e['error'][:70], '', '', '', ''))
                continue
            s = e['images_per_s']
            rows.append((
                k, mode, f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]",
                f"{s['median'] / eager:.2f}x" if eager else '',
                f"{e['gflops']:.1f}" if 'gflops' in e else '',
                f"{100 * e['fraction_of_jax_matmul_ceiling']:.1f}%" if 'gflops' in e else '',
                f"{e['compile_s']:.1f}" if e.get('compile_s') is not None else '-',
            ))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = '  '.join('{:<%d}' % wd for wd in widths)
    lines.append(fmt.format(*head))
    lines.append('  '.join('-' * wd for wd in widths))
    lines.extend(fmt.format(*r) for r in rows)
    lines.append('')
    for mode, r in rep['ratios'].items():
        parts = [f'{k} = {v:.3f}' for k, v in r.items() if v is not None and not k.endswith('_paired_median')]
        if parts:
            lines.append(f'{mode}: ' + ', '.join(parts))
    tc = rep['torch_compile']
    if tc['status'] != 'ok':
        lines.append(f"torch.compile: {tc['status']}" + (f" {tc['errors']}" if tc['errors'] else ''))
    lines.append('(% ceiling: achieved GFLOP/s over the JAX matmul ceiling measured above; compile s: JAX '
                 'lower+compile, timm_compile its first call; the ratio within one run is the figure to quote)')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# --isolate: one process per contender, alternated
# ----------------------------------------------------------------------------------------------

PROTOCOL = '@@ '  # a worker's replies on stdout start with this; anything else there is ignored
# Pause before each handover: a contender's idle worker threads (torch's OpenMP pool, XLA's) spin
# for a moment after their last call before they sleep; they must not spin into the other's round.
SETTLE_S = 0.5


def reply(obj: Dict[str, Any]) -> None:
    print(PROTOCOL + json.dumps(obj, default=jsonable), flush=True)


def worker_jax(run: Run, mode: str):
    """(call, sync, facts) of this project's contender, built alone in this process."""
    import jax
    import jax.numpy as jnp

    from swinv2_jax import create_model, host_memory
    from swinv2_jax.models.registry import resolve_name

    # Before the first JAX computation, as train.py does (a process of its own: torch is not here).
    kept = None if run.args.no_keep_host_memory else host_memory.keep_step_memory()
    run.jax_backend = jax.default_backend()
    run.device_name = jax_device_label(run)
    run.name = resolve_name(run.args.model)
    run.jax_overrides = dict(run.overrides, drop_path_rate=0.0)
    run.model = create_model(run.name, **dict(run.jax_overrides, dtype=jnp.bfloat16 if run.bf16 else jnp.float32))
    x_np, y_np = inputs(run)
    run.x_jax, run.y_jax = jax.device_put(jnp.asarray(x_np)), jax.device_put(jnp.asarray(y_np))
    run.variables = {'params': jax.jit(run.model.init)(jax.random.PRNGKey(0), run.x_jax[:1])['params']}
    run.modes = [mode]
    compile_jax(run)
    call, sync = jax_call(run, mode)
    return call, sync, {'compile_s': run.jax_compile_s[mode], 'flops_per_image': run.flops[mode] / run.args.batch,
                        'flops_source': run.flops_source[mode], 'forward_compiler_options': run.fwd_options,
                        'jax_env': {k: os.environ.get(k) for k, _ in run.args.jax_env},
                        'host_memory_kept': kept}


def worker_timm(run: Run, mode: str, compiled: bool):
    """(call, sync, facts) of timm eager or under torch.compile, with torch's defaults untouched."""
    import torch
    import timm

    from swinv2_jax.models.registry import resolve_name

    run.name = resolve_name(run.args.model)
    run.on_gpu = torch.cuda.is_available()
    run.tdev = torch.device('cuda' if run.on_gpu else 'cpu')
    run.device_name = torch.cuda.get_device_name(0) if run.on_gpu else f'cpu: {cpu_name()}'
    torch.manual_seed(0)
    timm_kwargs = {TIMM_KEYS[k]: v for k, v in run.overrides.items() if k in TIMM_KEYS}
    run.tmodel = timm.create_model(run.name, pretrained=False, drop_path_rate=0.0, **timm_kwargs).to(run.tdev)
    run.tmodel.train(mode == 'train')
    run.topt = torch.optim.AdamW(run.tmodel.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x_np, y_np = inputs(run)
    run.x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(run.tdev)
    run.y_t = torch.from_numpy(y_np.astype(np.int64)).to(run.tdev)
    net = torch.compile(run.tmodel, mode=run.args.compile_mode) if compiled else run.tmodel
    call, sync = torch_call(run, mode, net)
    return call, sync, {'torch_threads': torch.get_num_threads(), 'compile_mode': run.args.compile_mode}


def jax_device_label(run: Run) -> str:
    import jax
    return jax.devices()[0].device_kind if run.jax_backend != 'cpu' else f'cpu: {cpu_name()}'


def inputs(run: Run) -> Tuple[np.ndarray, np.ndarray]:
    """The images and labels every contender gets (the same seed in every process)."""
    from swinv2_jax.models.registry import model_config, resolve_name
    cfg = model_config(resolve_name(run.args.model), **run.overrides)
    h, w = (cfg['img_size'],) * 2 if isinstance(cfg['img_size'], int) else cfg['img_size']
    rng = np.random.default_rng(0)
    x = rng.standard_normal((run.args.batch, h, w, int(cfg.get('in_chans', 3))), dtype=np.float32)
    return x, rng.integers(0, max(int(cfg['num_classes']), 1), size=(run.args.batch,)).astype(np.int32)


def serve(args, modes, overrides) -> int:
    """A worker: build and warm up one contender in one mode, reply 'ready', then time `--iters`
    calls for each 'run' line on stdin until 'quit'."""
    run = Run(args=args, modes=modes, overrides=overrides, bf16=args.dtype == 'bfloat16')
    mode, who = modes[0], args.worker
    try:
        if who == 'jax':
            call, sync, facts = worker_jax(run, mode)
        else:
            call, sync, facts = worker_timm(run, mode, compiled=who == 'timm_compile')
        t0 = time.perf_counter()
        sync(call())
        facts['first_call_s'] = time.perf_counter() - t0
        for _ in range(args.warmup):
            sync(call())
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which goes on without it
        traceback.print_exc(file=sys.stderr)
        reply({'error': short_error(exc)})
        return 1
    gc.collect()
    reply(dict(facts, ready=True, device=run.device_name, pid=os.getpid()))
    for line in sys.stdin:
        if line.strip() != 'run':
            break
        reply({'seconds': timed(call, sync, args.iters)})
    return 0


def worker_env(who: str, jax_env: Tuple[Tuple[str, str], ...] = ()) -> Dict[str, str]:
    """The environment a worker starts with: the caller's, less the thread policy this script sets
    in its in-process mode. JAX's worker does not preallocate GPU memory (torch's shares the GPU)
    and gets `--jax-env`; torch's gets nothing added."""
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    if who == 'jax':
        env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
        env.update(jax_env)
    return env


class Worker:
    """A contender's process: started and warmed up alone, then told to run a round at a time."""

    def __init__(self, who: str, mode: str, argv: List[str], quiet: bool, jax_env=()):
        cmd = [sys.executable, os.path.abspath(__file__), *argv, '--worker', who, '--modes', mode]
        log(f'{mode}: starting {who} ({shlex.join(cmd[1:])})', quiet)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env(who, jax_env),
                                     text=True, bufsize=1)
        self.info = self.read()

    def read(self) -> Dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        return {'error': f'the worker exited (code {self.proc.wait()}) without replying; see stderr'}

    def run(self) -> float:
        time.sleep(SETTLE_S)
        self.proc.stdin.write('run\n')
        self.proc.stdin.flush()
        out = self.read()
        if 'seconds' not in out:
            raise RuntimeError(out.get('error', out))
        return out['seconds']

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write('quit\n')
            self.proc.stdin.close()
            self.proc.wait()


def worker_argv(argv: List[str]) -> List[str]:
    """The command line minus what the driver decides per worker (--isolate, --modes)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == '--isolate':
            continue
        elif a == '--modes':
            skip = True
        elif not a.startswith('--modes='):
            out.append(a)
    return out


def isolated_mode(args, mode: str, argv: List[str]) -> Dict[str, Any]:
    """One mode: the workers started in turn, then --repeats rounds of jax, timm_eager[, timm_compile]."""
    contenders = ['jax', 'timm_eager'] + ([] if args.no_compile else ['timm_compile'])
    workers: Dict[str, Worker] = {}
    res: Dict[str, Dict[str, Any]] = {}
    try:
        for who in contenders:
            w = Worker(who, mode, argv, args.json_only, jax_env=args.jax_env)
            res[who] = dict(w.info)
            if 'error' in w.info:
                log(f'  {who} failed: {w.info["error"]}', args.json_only)
                w.close()
            else:
                workers[who] = w
        rates: Dict[str, List[float]] = {k: [] for k in workers}
        for r in range(args.repeats):
            for who, w in workers.items():
                rates[who].append(args.batch * args.iters / w.run())
            log(f'  {mode} round {r + 1}/{args.repeats}: '
                + ', '.join(f'{k} {v[-1]:.2f} img/s' for k, v in rates.items()), args.json_only)
    finally:
        for w in workers.values():
            w.close()
    f_img = res.get('jax', {}).get('flops_per_image')
    for who, v in rates.items():
        res[who].update(images_per_s=summary(v), per_round_images_per_s=v)
        if f_img:
            res[who]['gflops'] = f_img * res[who]['images_per_s']['median'] / 1e9
    ratios: Dict[str, Optional[float]] = {}
    for other in ('timm_eager', 'timm_compile'):
        ok = 'jax' in rates and other in rates
        ratios[f'jax_vs_{other}'] = (statistics.median(rates['jax']) / statistics.median(rates[other])
                                     if ok else None)
        if ok:
            ratios[f'jax_vs_{other}_paired_median'] = statistics.median(
                a / c for a, c in zip(rates['jax'], rates[other]))
    return {'results': res, 'ratios': ratios}


def isolated_report(args, modes, overrides, argv) -> Dict[str, Any]:
    per_mode = {m: isolated_mode(args, m, worker_argv(argv)) for m in modes}
    return {
        'isolated': True,
        'command': 'python benchmarks/throughput.py ' + shlex.join(argv),
        'model': args.model, 'overrides': {k: jsonable(v) for k, v in overrides.items()},
        'batch': args.batch, 'dtype': args.dtype, 'repeats': args.repeats, 'iters': args.iters,
        'warmup': args.warmup, 'modes': modes, 'cpu': cpu_info(),
        'versions': versions('jax', 'jaxlib', 'flax', 'optax', 'torch', 'timm', 'numpy'),
        'env': {'caller_OMP_WAIT_POLICY_removed': os.environ.get('OMP_WAIT_POLICY'), 'jax_only': dict(args.jax_env),
                'XLA_FLAGS': os.environ.get('XLA_FLAGS'), 'cpu_count': os.cpu_count()},
        'results': {m: v['results'] for m, v in per_mode.items()},
        'ratios': {m: v['ratios'] for m, v in per_mode.items()},
    }


def format_isolated(rep: Dict[str, Any]) -> str:
    """One row per contender and mode, each naming the device (a CPU with its vector extensions)."""
    cpu = rep['cpu']
    cpu_label = f"{cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['vector_extensions']) or 'no listed extensions'})"
    ov = ' '.join(f'{k}={v}' for k, v in rep['overrides'].items())
    lines = [f"SwinV2 throughput, one process per contender: {rep['model']}{' (' + ov + ')' if ov else ''}, "
             f"batch {rep['batch']}, {rep['dtype']}, median of {rep['repeats']} alternated rounds of "
             f"{rep['iters']} calls", f"command: {rep['command']}", '']
    head = ('mode', 'contender', 'images/s median [min-max]', 'vs timm eager', 'GFLOP/s', 'device', 'settings')
    rows = []
    for mode, res in rep['results'].items():
        for who in CONTENDERS:
            e = res.get(who)
            if e is None:
                continue
            device = cpu_label if str(e.get('device', 'cpu')).startswith('cpu') else e.get('device', '')
            if 'images_per_s' not in e:
                rows.append((mode, who, 'n/a: ' + str(e.get('error', ''))[:70], '', '', device, ''))
                continue
            s = e['images_per_s']
            settings = (f"torch threads {e['torch_threads']}" if 'torch_threads' in e
                        else f"XLA forward options {e.get('forward_compiler_options') or 'default'}"
                        if mode == 'forward' else 'XLA defaults')
            if e.get('host_memory_kept'):
                settings += '; host memory kept (as train.py)'
            if e.get('jax_env'):
                settings += '; ' + ' '.join(f'{k}={v}' for k, v in e['jax_env'].items())
            eager = res.get('timm_eager', {}).get('images_per_s', {}).get('median')
            rows.append((mode, who, f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]",
                         f"{s['median'] / eager:.2f}x" if eager else '',
                         f"{e['gflops']:.1f}" if 'gflops' in e else '', device, settings))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = '  '.join('{:<%d}' % wd for wd in widths)
    lines += [fmt.format(*head), '  '.join('-' * wd for wd in widths)] + [fmt.format(*r) for r in rows] + ['']
    for mode, r in rep['ratios'].items():
        parts = [f'{k} = {v:.3f}' for k, v in r.items() if v is not None]
        if parts:
            lines.append(f'{mode}: ' + ', '.join(parts))
    return '\n'.join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, modes, overrides = parse_args(argv)
    if args.worker:
        return serve(args, modes, overrides)
    if args.isolate:
        report = isolated_report(args, modes, overrides, argv)
        if not args.json_only:
            print(format_isolated(report))
        print(json.dumps(report, default=jsonable, separators=(',', ':')))
        return 0
    set_environment()
    run = Run(args=args, modes=modes, overrides=overrides)
    setup_devices(run)
    build_models(run)
    compile_jax(run)
    sanity = sanity_check(run)
    ceiling = matmul_ceiling(run)
    results, ratios = {}, {}
    for mode in modes:
        results[mode], ratios[mode] = time_mode(run, mode, ceiling)
    report = build_report(run, sanity, ceiling, results, ratios)
    if not args.json_only:
        print(format_table(report))
    print(json.dumps(report, default=jsonable, separators=(',', ':')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
