#!/usr/bin/env python3
"""The GPU figures in one prepared run (under 8 minutes on one H100/H200): this project's SwinV2
with its two attention cores against timm eager and timm under torch.compile, bf16.

Cases: SwinV2-T/w8/256 at batch 128 and SwinV2-B/w16/256 at batch 64; modes: forward (inference)
and one AdamW training step; contenders:

* jax_default -- `create_model(name, dtype=bfloat16)` (attention_impl='default'), jitted;
* jax_cudnn   -- the same with attention_impl='cudnn' (cuDNN's fused attention);
* timm_eager  -- `timm.create_model(name)` under `torch.autocast(bfloat16)`;
* timm_compile -- the same under `torch.compile` (its default mode).

Each framework runs in its own process with its own defaults, one after the other (all JAX rows,
then all torch rows), so neither shares the GPU with the other. The JAX programs of a case are
compiled concurrently (XLA compiles on the CPU cores) before any is timed. Model FLOP utilisation
(MFU) = model FLOPs per image x images/s / the card's dense bf16 peak (`PEAK_BF16_TFLOPS`, by device
name; `--peak-tflops` for another card), with the model FLOPs counted once per case and mode on the
jaxpr of the default-core program (2 M N K of every matrix product and convolution: the same work
whoever runs it). A time budget (`--budget-s`) skips what would not finish, saying so; results are
written after every row, so a killed run leaves what it measured.

Writes `gpu_suite.json` and `gpu_suite.md` to `--out` (default: $OUT if set, else the current
directory). Without an NVIDIA GPU it stops at once (exit 2). `--dry-run` runs the same pipeline on
the CPU on a shrunken model (timm eager only, cuDNN reported as not applicable) to check the script.

    python benchmarks/gpu_suite.py                        # on the GPU machine
    python benchmarks/gpu_suite.py --dry-run --out /tmp   # anywhere, about a minute
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import LR, WEIGHT_DECAY, jsonable, log, make_train_step, short_error, summary, timed, versions  # noqa: E402

CASES = (('swinv2_tiny_window8_256', 128), ('swinv2_base_window16_256', 64))
DRY_RUN_CASES = (('swinv2_tiny_window8_256', 2),)
DRY_RUN_OVERRIDES = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), img_size=64, window_size=4)
MODES = ('forward', 'train')
CONTENDERS = ('jax_default', 'jax_cudnn', 'timm_eager', 'timm_compile')
JAX_IMPLS = {'jax_default': 'default', 'jax_cudnn': 'cudnn'}

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched as
# substrings of the device name in this order (the more specific names first).
PEAK_BF16_TFLOPS = (
    ('GH200', 989.4), ('H200', 989.4), ('H100 PCIe', 756.0), ('H100 NVL', 835.5), ('H100', 989.4),
    ('H800', 989.4), ('B200', 2250.0), ('B100', 1750.0), ('A100', 312.0), ('A800', 312.0),
    ('L40S', 362.1), ('L40', 181.0), ('L4', 121.0), ('A10G', 70.0), ('A10', 125.0),
    ('RTX 4090', 165.2), ('RTX 6000 Ada', 364.2), ('A6000', 154.8),
)


def peak_bf16_tflops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a device by its name (`PEAK_BF16_TFLOPS`), None if not listed."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def no_gpu(why: str):
    print(f'gpu_suite: no usable NVIDIA GPU: {why}. Run it on a machine with one, or with --dry-run to '
          f'check the script on the CPU.', file=sys.stderr)
    raise SystemExit(2)


def require_nvidia_gpu() -> str:
    """The first GPU's name from nvidia-smi; exit 2 at once, saying why, where there is none."""
    smi = shutil.which('nvidia-smi')
    if smi is None:
        no_gpu('nvidia-smi not found')
    try:
        out = subprocess.run([smi, '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        no_gpu(f'nvidia-smi failed ({short_error(exc)})')
    names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
    if out.returncode or not names:
        no_gpu(f'nvidia-smi lists none ({out.stderr.strip() or "empty output"})')
    return names[0]


# ----------------------------------------------------------------------------------------------
# Model FLOPs (the default core's jaxpr, abstract shapes: nothing is compiled or run)
# ----------------------------------------------------------------------------------------------

def model_flops_per_image(name: str, batch: int, overrides: Dict[str, Any]) -> Dict[str, float]:
    """{mode: matmul and convolution FLOPs per image} of the bf16 default-core program."""
    import jax
    import jax.numpy as jnp

    from swinv2_jax import create_model
    from throughput import jaxpr_matmul_flops

    model = create_model(name, **dict(overrides, dtype=jnp.bfloat16, drop_path_rate=0.0))
    h, w = model.img_size
    x = jax.ShapeDtypeStruct((batch, h, w, model.in_chans), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)['params']
    tx, train_step = make_train_step(model)
    opt = jax.eval_shape(tx.init, params)
    fwd = jaxpr_matmul_flops(jax.make_jaxpr(model.apply)({'params': params}, x))
    train = jaxpr_matmul_flops(jax.make_jaxpr(train_step)(params, opt, x, y))
    return {'forward': fwd / batch, 'train': train / batch}


# ----------------------------------------------------------------------------------------------
# The two framework processes
# ----------------------------------------------------------------------------------------------

def time_call(call, sync, batch: int, args) -> Dict[str, Any]:
    """First call, --warmup calls, then --repeats rounds of --iters calls, each round synchronised once."""
    t0 = time.perf_counter()
    sync(call())
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        sync(call())
    rates = [batch * args.iters / timed(call, sync, args.iters) for _ in range(args.repeats)]
    return {'first_call_s': first, 'images_per_s': summary(rates), 'per_round_images_per_s': rates}


def jax_part(args, cases, overrides, emit) -> None:
    """Every JAX row: per case, all programs lowered, compiled concurrently, then timed in turn."""
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    for name, batch in cases:
        if over_budget(args):
            for who, mode in ((w, m) for w in JAX_IMPLS for m in args.modes):
                emit(dict(case=name, batch=batch, mode=mode, contender=who,
                          error=f'skipped: past the {args.budget_s:.0f} s budget'))
            continue
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((batch, 256, 256, 3), dtype=np.float32))
        y = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
        programs = []
        for who, impl in JAX_IMPLS.items():
            for mode in args.modes:
                try:  # cuDNN's requirements are checked at create_model, its shapes when lowering
                    programs.append((who, mode) + lower_program(name, impl, mode, overrides, x, y))
                except Exception as exc:  # noqa: BLE001 - reported in the row
                    emit(dict(case=name, batch=batch, mode=mode, contender=who, error=short_error(exc)))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(programs) or 1) as pool:
            compiled = list(pool.map(lambda p: safe_compile(p[2]), programs))
        compile_s = time.perf_counter() - t0
        for (who, mode, _, state, params, x, y), exe in zip(programs, compiled):
            row = dict(case=name, batch=batch, mode=mode, contender=who, device=device.device_kind,
                       compile_s_all_programs_concurrently=compile_s)
            if isinstance(exe, str):
                emit(dict(row, error=exe))
                continue
            if mode == 'forward':
                def call(exe=exe, params=params, x=x):
                    return exe({'params': params}, x)
            else:
                def call(exe=exe, state=state, x=x, y=y):
                    state[0], state[1], loss = exe(state[0], state[1], x, y)
                    return loss
            try:
                emit(dict(row, **time_call(call, jax.block_until_ready, batch, args)))
            except Exception as exc:  # noqa: BLE001 - e.g. cuDNN refusing a shape at run time
                emit(dict(row, error=short_error(exc)))


def lower_program(name, impl, mode, overrides, x, y):
    """(lowered, train state or None, params, images, labels) of one contender's program."""
    import jax
    import jax.numpy as jnp

    from swinv2_jax import create_model

    model = create_model(name, **dict(overrides, dtype=jnp.bfloat16, drop_path_rate=0.0, attention_impl=impl))
    h, w = model.img_size
    x = x[:, :h, :w]
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])['params']
    if mode == 'forward':
        return jax.jit(model.apply).lower({'params': params}, x), None, params, x, y
    tx, step = make_train_step(model)
    state = [params, jax.jit(tx.init)(params)]  # donated by each call
    return jax.jit(step, donate_argnums=(0, 1)).lower(state[0], state[1], x, y), state, params, x, y


def safe_compile(lowered):
    try:
        return lowered.compile()
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return short_error(exc)


def torch_part(args, cases, overrides, emit) -> None:
    """Every timm row: eager, then under torch.compile, with torch's defaults (bf16 autocast)."""
    import torch
    import torch.nn.functional as F
    import timm

    on_gpu = torch.cuda.is_available()
    dev = torch.device('cuda' if on_gpu else 'cpu')
    device = torch.cuda.get_device_name(0) if on_gpu else 'cpu'
    keys = ('embed_dim', 'depths', 'num_heads', 'img_size', 'window_size')
    sync = (lambda _=None: torch.cuda.synchronize()) if on_gpu else (lambda _=None: None)
    contenders = ['timm_eager'] + ([] if args.no_compile else ['timm_compile'])
    for name, batch in cases:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        tmodel = timm.create_model(name, pretrained=False, drop_path_rate=0.0,
                                   **{k: v for k, v in overrides.items() if k in keys}).to(dev)
        side = tmodel.patch_embed.img_size
        x = torch.from_numpy(rng.standard_normal((batch, 3, *side), dtype=np.float32)).to(dev)
        y = torch.from_numpy(rng.integers(0, 1000, batch)).to(dev)
        opt = torch.optim.AdamW(tmodel.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        for who in contenders:
            net = tmodel if who == 'timm_eager' else torch.compile(tmodel)
            for mode in args.modes:
                row = dict(case=name, batch=batch, mode=mode, contender=who, device=device)
                if over_budget(args):
                    emit(dict(row, error=f'skipped: past the {args.budget_s:.0f} s budget'))
                    continue
                tmodel.train(mode == 'train')
                if mode == 'forward':
                    def call(net=net):
                        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
                            return net(x)
                else:
                    def call(net=net):
                        opt.zero_grad(set_to_none=True)
                        with torch.autocast(dev.type, dtype=torch.bfloat16):
                            loss = F.cross_entropy(net(x), y)
                        loss.backward()
                        opt.step()
                        return loss
                try:
                    emit(dict(row, **time_call(call, sync, batch, args)))
                except Exception as exc:  # noqa: BLE001 - torch.compile failures are reported, not fatal
                    emit(dict(row, error=short_error(exc)))
        del tmodel, opt
        if on_gpu:
            torch.cuda.empty_cache()


def over_budget(args) -> bool:
    return time.time() - args.started > args.budget_s


def part_main(args, cases, overrides) -> int:
    """A framework process: its rows as JSON lines on stdout."""
    def emit(row):
        print('@@ ' + json.dumps(row, default=jsonable), flush=True)
    (jax_part if args.part == 'jax' else torch_part)(args, cases, overrides, emit)
    return 0


# ----------------------------------------------------------------------------------------------
# The driver: both processes, MFU, the JSON and the markdown table
# ----------------------------------------------------------------------------------------------

def run_part(part: str, argv: List[str], quiet: bool) -> List[Dict[str, Any]]:
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    if part == 'jax':
        env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
    cmd = [sys.executable, os.path.abspath(__file__), *argv, '--part', part]
    log(f'gpu_suite: {part} process', quiet)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    rows = [json.loads(line[3:]) for line in proc.stdout.splitlines() if line.startswith('@@ ')]
    if proc.returncode:
        rows.append(dict(contender=part, error=f'the {part} process exited with code {proc.returncode}'))
    return rows


def add_mfu(rows, flops: Dict[str, Dict[str, float]], peak_tflops: Optional[float]) -> None:
    for r in rows:
        f = flops.get(r.get('case'), {}).get(r.get('mode'))
        if f is None or 'images_per_s' not in r:
            continue
        r['model_tflops_per_s'] = f * r['images_per_s']['median'] / 1e12
        r['mfu'] = r['model_tflops_per_s'] / peak_tflops if peak_tflops else None


def render_markdown(report: Dict[str, Any]) -> str:
    peak = report['peak_bf16_tflops']
    lines = [f"GPU: {report['device']}, bf16 peak {peak if peak else 'unknown'} TFLOP/s dense; {report['date']}; "
             + ', '.join(f'{k} {v}' for k, v in report['versions'].items() if v),
             f"command: `{report['command']}`", '',
             '| model | batch | mode | contender | images/s median [min-max] | vs timm eager | model TFLOP/s | MFU |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    eager = {(r['case'], r['mode']): r['images_per_s']['median'] for r in report['rows']
             if r.get('contender') == 'timm_eager' and 'images_per_s' in r}
    for r in report['rows']:
        cells = [r.get('case', ''), r.get('batch', ''), r.get('mode', ''), r.get('contender', '')]
        if 'images_per_s' not in r:
            cells += ['n/a: ' + str(r.get('error', '')).replace('|', '/')[:160], '', '', '']
        else:
            s, mfu = r['images_per_s'], r.get('mfu')
            base = eager.get((r['case'], r['mode']))
            cells += [f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]",
                      f"{s['median'] / base:.2f}x" if base else '',
                      f"{r['model_tflops_per_s']:.3g}" if 'model_tflops_per_s' in r else '',
                      f'{100 * mfu:.1f}%' if mfu is not None else 'n/a']
        lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
    lines += ['', 'MFU: model FLOPs per image (matrix products and convolutions of the default-core '
              'program, forward or forward+backward) x images/s over the dense bf16 peak.']
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dry-run', action='store_true', help='a shrunken model on the CPU: checks the script')
    p.add_argument('--out', default=os.environ.get('OUT', '.'), help='where the JSON and markdown go')
    p.add_argument('--repeats', type=int, default=3, help='timed rounds per row')
    p.add_argument('--iters', type=int, default=10, help='calls per round')
    p.add_argument('--warmup', type=int, default=3, help='untimed calls after the first')
    p.add_argument('--modes', default='forward,train')
    p.add_argument('--cases', default=None,
                   help='comma-separated model names of CASES to run (default: all), e.g. swinv2_tiny_window8_256')
    p.add_argument('--no-compile', action='store_true', help='no timm_compile rows')
    p.add_argument('--budget-s', type=float, default=420.0,
                   help='torch rows not started after this many seconds are skipped (the run must end '
                        'within 8 minutes)')
    p.add_argument('--peak-tflops', type=float, default=None, help='the bf16 peak, for a card not in the table')
    p.add_argument('--part', choices=('jax', 'torch'), default=None, help=argparse.SUPPRESS)
    p.add_argument('--started', type=float, default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.modes = [m for m in args.modes.split(',') if m]
    if any(m not in MODES for m in args.modes):
        raise SystemExit(f'--modes: choose from {",".join(MODES)}')
    cases, overrides = (DRY_RUN_CASES, DRY_RUN_OVERRIDES) if args.dry_run else (CASES, {})
    if args.cases:
        wanted = args.cases.split(',')
        unknown = [c for c in wanted if c not in dict(cases)]
        if unknown:
            raise SystemExit(f'--cases: unknown {unknown}; choose from {",".join(dict(cases))}')
        cases = tuple(c for c in cases if c[0] in wanted)
    if args.part:
        args.started = args.started or time.time()
        return part_main(args, cases, overrides)
    if args.dry_run:
        args.no_compile = True  # torch.compile on 2 CPU cores takes minutes: not what a dry run checks
        device = 'cpu (dry run)'
    else:
        device = require_nvidia_gpu()
    started = time.time()
    flops = {name: model_flops_per_image(name, batch, overrides) for name, batch in cases}
    child = argv + (['--no-compile'] if args.no_compile and '--no-compile' not in argv else []) + \
        ['--started', repr(started)]
    rows = []
    for part in ('jax', 'torch'):
        rows += run_part(part, child, quiet=False)
        write_outputs(args, device, argv, rows, flops)
    report = write_outputs(args, device, argv, rows, flops)
    print(render_markdown(report))
    log(f'gpu_suite: {time.time() - started:.0f} s; wrote {args.out}/gpu_suite.json and gpu_suite.md', False)
    return 0


def write_outputs(args, device: str, argv: List[str], rows, flops) -> Dict[str, Any]:
    peak = args.peak_tflops or peak_bf16_tflops(device)
    add_mfu(rows, flops, peak)
    order = {name: i for i, (name, _) in enumerate(CASES + DRY_RUN_CASES)}
    rows.sort(key=lambda r: (order.get(r.get('case'), 99), MODES.index(r['mode']) if r.get('mode') in MODES else 9,
                             CONTENDERS.index(r['contender']) if r.get('contender') in CONTENDERS else 9))
    report = {
        'device': device, 'peak_bf16_tflops': peak, 'dry_run': args.dry_run,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'command': 'python benchmarks/gpu_suite.py ' + ' '.join(argv),
        'versions': versions('jax', 'jaxlib', 'flax', 'optax', 'torch', 'timm'),
        'model_flops_per_image': flops, 'repeats': args.repeats, 'iters': args.iters, 'warmup': args.warmup,
        'rows': rows,
    }
    os.makedirs(args.out, exist_ok=True)
    for fname, text in (('gpu_suite.json', json.dumps(report, default=jsonable, indent=1)),
                        ('gpu_suite.md', render_markdown(report))):
        tmp = os.path.join(args.out, fname + '.tmp')
        with open(tmp, 'w') as f:
            f.write(text + '\n')
        os.replace(tmp, os.path.join(args.out, fname))
    return report


if __name__ == '__main__':
    sys.exit(main())
