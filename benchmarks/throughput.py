#!/usr/bin/env python3
"""Throughput of this project's SwinV2 (JAX/Flax) against timm's (PyTorch eager and torch.compile).

One process measures, for each mode (`forward`, `train`):

* jax           -- this project: forward = jitted `model.apply(variables, x)`; train = one jitted step
                   (forward + cross-entropy + backward + optax.adamw update, params and optimizer
                   state donated);
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

The last line printed is one JSON object with every number. Imports only jax/flax/optax/numpy/
torch/timm and `swinv2_jax` (no TensorFlow). See benchmarks/README.md.

    python benchmarks/throughput.py --model swinv2_tiny_window8_256 --batch 8
    python benchmarks/throughput.py --batch 2 --repeats 2 --iters 1 --no-compile \
        --override embed_dim=32 --override 'depths=(1,1,1,1)' --override 'num_heads=(1,2,4,8)'
"""
from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np

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
LR, WEIGHT_DECAY = 1e-4, 0.05  # the same AdamW on both sides


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def make_train_step(model):
    """(optimizer, step) of the benchmarked training step, shared with hlo_profile.py: forward in
    train mode, cross-entropy, backward, AdamW update. `step(params, opt_state, x, y)` returns
    (params, opt_state, loss); initialise the state with `optimizer.init(params)`."""
    import jax
    import jax.numpy as jnp
    import optax

    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)

    def loss_fn(params, x, y):
        logits = model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(0)})
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, train_step


class Log:
    quiet = False

    @classmethod
    def info(cls, msg: str):
        if not cls.quiet:
            print(msg, file=sys.stderr, flush=True)


def parse_override(text: str):
    if '=' not in text:
        raise argparse.ArgumentTypeError(f'--override wants KEY=VALUE, got {text!r}')
    key, value = text.split('=', 1)
    key = key.strip()
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()  # a bare word, e.g. dtype=bfloat16
    return key, parsed


def summary(values: List[float]) -> Dict[str, float]:
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def short_error(exc: BaseException, limit: int = 600) -> str:
    text = f'{type(exc).__name__}: {exc}'.strip().replace('\n', ' | ')
    return text if len(text) <= limit else text[:limit] + ' ...'


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


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], Any], sync: Callable[[Any], None], iters: int) -> float:
    """Seconds for `iters` back-to-back calls, synchronised once at the end."""
    t0 = time.perf_counter()
    out = None
    for _ in range(iters):
        out = fn()
    sync(out)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# Main
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
    p.add_argument('--compile-mode', default=None,
                   help='torch.compile mode (default, reduce-overhead, max-autotune); default: none')
    p.add_argument('--matmul-n', type=int, default=None,
                   help='side of the square matmul ceiling (default 2048 on CPU, 8192 on GPU)')
    p.add_argument('--torch-threads', type=int, default=None,
                   help='torch CPU threads (default: os.cpu_count()); JAX uses all cores')
    p.add_argument('--json-only', action='store_true', help='print only the final JSON line')
    p.add_argument('--override', action='append', default=[], type=parse_override, metavar='KEY=VALUE',
                   help='create_model override (value via ast.literal_eval), applied to both sides; '
                        'repeatable, e.g. --override embed_dim=32 --override "depths=(1,1,1,1)"')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    Log.quiet = args.json_only
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise SystemExit(f'--modes: unknown {bad}; choose from {",".join(MODES)}')
    if min(args.batch, args.repeats, args.iters) < 1 or args.warmup < 0:
        raise SystemExit('--batch, --repeats and --iters must be >= 1, --warmup >= 0')
    overrides = dict(args.override)
    if 'dtype' in overrides:
        raise SystemExit('pass the computation dtype with --dtype, not --override dtype=...')

    warnings.filterwarnings('ignore', message='.*donated buffers were not usable.*')
    # libgomp reads this when torch loads it. Its default (ACTIVE) keeps torch's idle OpenMP threads
    # spinning after each parallel region: in one process with XLA's thread pool, and on a shared
    # machine, they steal the cores the other contender is timed on (seen: timm 5-10x slower on a
    # loaded 2-core box). Set OMP_WAIT_POLICY yourself to override.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    # On a GPU JAX would otherwise take 75% of its memory up front and leave torch the rest.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import torch.nn.functional as F
    import timm

    from swinv2_jax import create_model, load_torch_weights
    from swinv2_jax.compile_options import inference_compiler_options
    from swinv2_jax.models.registry import model_config, resolve_name

    # -- device ------------------------------------------------------------------------------------
    jax_backend = jax.default_backend()
    on_gpu = torch.cuda.is_available()
    tdev = torch.device('cuda' if on_gpu else 'cpu')
    if jax_backend == 'gpu' and not on_gpu:
        Log.info('warning: JAX sees a GPU but torch does not: the comparison is not like for like')
    if on_gpu and jax_backend != 'gpu':
        Log.info('warning: torch sees a GPU but JAX does not: the comparison is not like for like')
    if on_gpu:
        # TF32 for float32 matmuls/convs, as JAX's default precision allows on the GPU.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    jax_device = jax.devices()[0]
    device_name = (jax_device.device_kind if jax_backend != 'cpu'
                   else f'cpu: {cpu_name()} ({os.cpu_count()} cores)')
    torch_device_name = torch.cuda.get_device_name(0) if on_gpu else f'cpu ({torch.get_num_threads()} threads)'
    bf16 = args.dtype == 'bfloat16'
    jdtype = jnp.bfloat16 if bf16 else jnp.float32
    tdtype = torch.bfloat16 if bf16 else torch.float32

    def autocast():
        return torch.autocast(tdev.type, dtype=torch.bfloat16, enabled=bf16)

    def tsync(_=None):
        if on_gpu:
            torch.cuda.synchronize()

    # -- models ------------------------------------------------------------------------------------
    name = resolve_name(args.model)
    jax_overrides = dict(overrides, drop_path_rate=0.0)
    cfg = model_config(name, **jax_overrides)
    model = create_model(name, **dict(jax_overrides, dtype=jdtype))
    timm_kwargs = {TIMM_KEYS[k]: v for k, v in overrides.items() if k in TIMM_KEYS}
    timm_skip = None
    if int(cfg.get('extra_norm_every', 0) or 0):
        timm_skip = 'timm has no extra_norm_every (SwinV2-H/G layout)'
    elif name not in timm.list_models('swinv2*'):
        timm_skip = f'timm {timm.__version__} has no model {name!r}'
    ignored = sorted(k for k in overrides if k not in TIMM_KEYS and k not in JAX_ONLY_KEYS
                     and k not in ('drop_path_rate', 'extra_norm_every'))
    if ignored:
        Log.info(f'note: overrides {ignored} are applied to the JAX model only')

    torch.manual_seed(0)
    b = args.batch
    h, w = model.img_size
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b, h, w, model.in_chans), dtype=np.float32)
    y_np = rng.integers(0, max(model.num_classes, 1), size=(b,)).astype(np.int32)
    x_jax = jax.device_put(jnp.asarray(x_np))
    y_jax = jax.device_put(jnp.asarray(y_np))
    x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(tdev)
    y_t = torch.from_numpy(y_np.astype(np.int64)).to(tdev)

    tmodel = None
    if timm_skip is None:
        Log.info(f'building timm {name} {timm_kwargs or ""}')
        tmodel = timm.create_model(name, pretrained=False, drop_path_rate=0.0, **timm_kwargs)
        # timm zero-initialises the res-post-norms (every block starts as the identity); give them
        # random scales so that the sanity check below exercises the attention and MLP branches.
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for pname, prm in tmodel.named_parameters():
                if pname.endswith(('norm1.weight', 'norm2.weight')):
                    prm.copy_(1.0 + 0.2 * torch.randn(prm.shape, generator=gen))
                elif pname.endswith(('norm1.bias', 'norm2.bias')):
                    prm.copy_(0.02 * torch.randn(prm.shape, generator=gen))
        variables = load_torch_weights({k: v.detach().cpu() for k, v in tmodel.state_dict().items()},
                                       model, layout='timm')
        tmodel = tmodel.to(tdev)
    else:
        Log.info(f'timm contenders skipped: {timm_skip}')
        variables = model.init(jax.random.PRNGKey(0), x_jax[:1])
        variables = {'params': variables['params']}
    variables = jax.device_put(variables)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables['params']))

    compile_reason = 'skipped (--no-compile)' if args.no_compile else (timm_skip and f'skipped: {timm_skip}')
    compile_errors: Dict[str, str] = {}
    cmodel = None
    if tmodel is not None and not args.no_compile:
        try:
            cmodel = torch.compile(tmodel, mode=args.compile_mode)
        except Exception as exc:  # noqa: BLE001
            compile_reason = short_error(exc)
            Log.info(f'torch.compile failed: {compile_reason}')

    # the forward pass is compiled as the trainer's eval step is (swinv2_jax/compile_options.py:
    # Eigen's matmuls on XLA:CPU); --default-xla-options compiles it with XLA's defaults
    fwd_options = {} if args.default_xla_options else inference_compiler_options()
    fwd = jax.jit(model.apply, compiler_options=fwd_options)

    # -- JAX compilation (timed apart) and FLOPs ---------------------------------------------------
    tx, train_step = make_train_step(model)
    step = jax.jit(train_step, donate_argnums=(0, 1))
    jax_compiled: Dict[str, Any] = {}
    jax_compile_s: Dict[str, float] = {}
    flops: Dict[str, Optional[float]] = {}
    flops_source: Dict[str, str] = {}
    flops_both: Dict[str, Dict[str, Optional[float]]] = {}
    train_state: Dict[str, Any] = {}
    for mode in modes:
        Log.info(f'jax: lowering and compiling {mode}')
        t0 = time.perf_counter()
        if mode == 'forward':
            lower_args = (variables, x_jax)
            lowered = fwd.lower(*lower_args)
        else:
            params = jax.tree_util.tree_map(jnp.copy, variables['params'])  # donated: keep ours
            train_state['params'] = params
            train_state['opt'] = jax.jit(tx.init)(params)
            lower_args = (train_state['params'], train_state['opt'], x_jax, y_jax)
            lowered = step.lower(*lower_args)
        compiled = lowered.compile()
        jax_compile_s[mode] = time.perf_counter() - t0
        jax_compiled[mode] = compiled
        # The compiled module's count (XLA cost analysis) is the work figure, but on the GPU it
        # leaves out the matrix products done in library calls (cuBLAS custom calls): seen on an H100
        # 1.8 against 12.4 GFLOP/image on the CPU for swinv2_tiny_window8_256 forward, and the lowered
        # module's count is not available there. So the matrix FLOPs are also counted from the jaxpr
        # (backend independent) and used whenever the compiled count falls below them.
        f_comp = cost_flops(compiled)
        f_mm = jaxpr_matmul_flops(jax.make_jaxpr(model.apply if mode == 'forward' else train_step)(*lower_args))
        flops_both[mode] = {'xla_compiled': f_comp, 'jaxpr_matmul': f_mm}
        if f_comp is not None and f_comp >= f_mm:
            f, flops_source[mode] = f_comp, 'xla_compiled'
        else:
            f, flops_source[mode] = f_mm, 'jaxpr_matmul (the compiled count was short or missing)'
        flops[mode] = f
        Log.info(f'  {jax_compile_s[mode]:.1f} s, {f / b / 1e9 if f else float("nan"):.2f} GFLOP/image')

    # -- sanity check (float32, highest precision on both sides) -----------------------------------
    sanity: Dict[str, Any] = {}

    def max_rel(a: np.ndarray, ref: np.ndarray) -> float:
        a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
        return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))

    if tmodel is not None:
        Log.info('sanity check: float32 forward, jax vs timm eager')
        tmodel.eval()
        model32 = model if not bf16 else create_model(name, **dict(jax_overrides, dtype=jnp.float32))
        if not bf16 and jax_backend == 'cpu' and 'forward' in jax_compiled:
            out_j = np.asarray(jax_compiled['forward'](variables, x_jax))  # float32 is exact on CPU
        else:
            with jax.default_matmul_precision('highest'):
                out_j = np.asarray(jax.jit(model32.apply)(variables, x_jax))
        prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.inference_mode():
            out_t = tmodel(x_t).float().cpu().numpy()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
        sanity['forward_max_rel_diff_float32'] = max_rel(out_j, out_t)
        sanity['definition'] = 'max|jax - timm| / max|timm| over the logits'
        del out_j, out_t
        if bf16:
            with torch.inference_mode(), autocast():
                out_t = tmodel(x_t).float().cpu().numpy()
            f16 = jax_compiled.get('forward') or fwd
            out_j = np.asarray(f16(variables, x_jax)).astype(np.float32)
            sanity['forward_max_rel_diff_bfloat16'] = max_rel(out_j, out_t)
        Log.info(f'  {sanity}')

    # -- matmul ceiling ----------------------------------------------------------------------------
    n = args.matmul_n or (8192 if (on_gpu or jax_backend == 'gpu') else 2048)
    Log.info(f'matmul ceiling: {n}x{n} {args.dtype}')
    ka, kb = jax.random.split(jax.random.PRNGKey(1))
    a_j = jax.random.normal(ka, (n, n), jnp.float32).astype(jdtype)
    b_j = jax.random.normal(kb, (n, n), jnp.float32).astype(jdtype)
    mm = jax.jit(lambda a, c: a @ c).lower(a_j, b_j).compile()
    a_t = torch.randn(n, n, device=tdev, dtype=torch.float32).to(tdtype)
    b_t = torch.randn(n, n, device=tdev, dtype=torch.float32).to(tdtype)
    mm_calls = {'jax': (lambda: mm(a_j, b_j), jax.block_until_ready),
                'torch': (lambda: torch.mm(a_t, b_t), tsync)}
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
    del a_j, b_j, a_t, b_t
    Log.info(f'  jax {ceiling["jax_gflops"]["median"]:.1f} GFLOP/s, torch {ceiling["torch_gflops"]["median"]:.1f} GFLOP/s')

    # -- contenders --------------------------------------------------------------------------------
    def jax_call(mode):
        compiled = jax_compiled[mode]
        if mode == 'forward':
            return (lambda: compiled(variables, x_jax)), jax.block_until_ready

        def call():
            p, o, loss = compiled(train_state['params'], train_state['opt'], x_jax, y_jax)
            train_state['params'], train_state['opt'] = p, o
            return p, o, loss
        return call, jax.block_until_ready

    topt = torch.optim.AdamW(tmodel.parameters(), lr=LR, weight_decay=WEIGHT_DECAY) if tmodel is not None else None

    def torch_call(mode, net):
        if mode == 'forward':
            def call():
                with torch.inference_mode(), autocast():
                    return net(x_t)
            return call, tsync

        def call():
            topt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(net(x_t), y_t)
            loss.backward()
            topt.step()
            return loss
        return call, tsync

    results: Dict[str, Dict[str, Any]] = {}
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    for mode in modes:
        Log.info(f'== {mode} ==')
        if tmodel is not None:
            tmodel.train(mode == 'train')
        calls: Dict[str, Any] = {}
        res: Dict[str, Any] = {}
        # JAX: already compiled; warm up.
        fn, sync = jax_call(mode)
        t0 = time.perf_counter()
        sync(fn())
        res['jax'] = {'compile_s': jax_compile_s[mode], 'first_call_s': time.perf_counter() - t0}
        for _ in range(args.warmup):
            sync(fn())
        calls['jax'] = (fn, sync)
        if tmodel is not None:
            fn, sync = torch_call(mode, tmodel)
            t0 = time.perf_counter()
            sync(fn())
            res['timm_eager'] = {'compile_s': None, 'first_call_s': time.perf_counter() - t0}
            for _ in range(args.warmup):
                sync(fn())
            calls['timm_eager'] = (fn, sync)
        if cmodel is not None:
            fn, sync = torch_call(mode, cmodel)
            try:
                Log.info('torch.compile: first call (compiles)')
                t0 = time.perf_counter()
                sync(fn())
                first = time.perf_counter() - t0
                for _ in range(args.warmup):
                    sync(fn())
                res['timm_compile'] = {'compile_s': first, 'first_call_s': first}
                calls['timm_compile'] = (fn, sync)
                Log.info(f'  {first:.1f} s')
            except Exception as exc:  # noqa: BLE001
                compile_errors[mode] = short_error(exc)
                res['timm_compile'] = {'error': compile_errors[mode]}
                Log.info(f'torch.compile failed in {mode}: {compile_errors[mode]}')
                if not Log.quiet:
                    traceback.print_exc(file=sys.stderr)
                if tmodel is not None:
                    topt.zero_grad(set_to_none=True)
        elif tmodel is not None:
            res['timm_compile'] = {'error': compile_reason or 'skipped'}

        gc.collect()
        rates: Dict[str, List[float]] = {k: [] for k in calls}
        for r in range(args.repeats):
            for k, (fn, sync) in calls.items():
                sec = timed(fn, sync, args.iters)
                rates[k].append(b * args.iters / sec)
            Log.info(f'  round {r + 1}/{args.repeats}: '
                     + ', '.join(f'{k} {v[-1]:.2f} img/s' for k, v in rates.items()))

        f_img = flops[mode] / b if flops[mode] else None
        for k, v in rates.items():
            s = summary(v)
            entry = res[k]
            entry.update({'images_per_s': s, 'per_round_images_per_s': v})
            if f_img:
                gfl = f_img * s['median'] / 1e9
                entry['gflops'] = gfl
                entry['fraction_of_jax_matmul_ceiling'] = gfl / ceiling['jax_gflops']['median']
                entry['fraction_of_torch_matmul_ceiling'] = gfl / ceiling['torch_gflops']['median']
        rmode: Dict[str, Optional[float]] = {}
        for other in ('timm_eager', 'timm_compile'):
            if other in rates:
                rmode[f'jax_vs_{other}'] = (statistics.median(rates['jax'])
                                            / statistics.median(rates[other]))
                # the same, paired round by round (the contenders of a round ran back to back)
                rmode[f'jax_vs_{other}_paired_median'] = statistics.median(
                    a / c for a, c in zip(rates['jax'], rates[other]))
            else:
                rmode[f'jax_vs_{other}'] = None
        ratios[mode] = rmode
        results[mode] = res

    # -- report ------------------------------------------------------------------------------------
    versions = {'python': platform.python_version(), 'jax': jax.__version__, 'jaxlib': _jaxlib_version(),
                'flax': _version('flax'), 'optax': optax.__version__, 'torch': torch.__version__,
                'timm': timm.__version__, 'numpy': np.__version__}
    report = {
        'model': name, 'overrides': {k: _jsonable(v) for k, v in overrides.items()},
        'params': n_params, 'batch': b, 'dtype': args.dtype, 'img_size': list(model.img_size),
        'repeats': args.repeats, 'iters': args.iters, 'warmup': args.warmup, 'modes': modes,
        'backend': {'jax': jax_backend, 'torch': tdev.type},
        'device': device_name, 'torch_device': torch_device_name,
        'precision': ('float32 at default precision on both sides (TF32 allowed on the GPU)' if not bf16
                      else 'bfloat16 compute, float32 params (JAX dtype=bfloat16; torch autocast)'),
        'versions': versions,
        'env': {'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY'), 'torch_threads': torch.get_num_threads(),
                'cpu_count': os.cpu_count(), 'XLA_FLAGS': os.environ.get('XLA_FLAGS'),
                'jax_forward_compiler_options': fwd_options,
                'XLA_PYTHON_CLIENT_PREALLOCATE': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')},
        'flops_per_image': {m: (flops[m] / b if flops[m] else None) for m in modes},
        'flops_source': flops_source,
        'flops_per_image_by_source': {m: {k: (v / b if v else None) for k, v in d.items()}
                                      for m, d in flops_both.items()},
        'matmul_ceiling': ceiling,
        'sanity': sanity,
        'torch_compile': {'mode': args.compile_mode, 'status': compile_reason or ('ok' if not compile_errors else 'failed'),
                          'errors': compile_errors},
        'results': results,
        'ratios': ratios,
    }
    if not args.json_only:
        print(format_table(report))
    print(json.dumps(report, default=_jsonable, separators=(',', ':')))
    return 0


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


def _version(pkg: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


def _jaxlib_version() -> Optional[str]:
    try:
        import jaxlib
        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return None


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


if __name__ == '__main__':
    sys.exit(main())
