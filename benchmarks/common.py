"""What the benchmark scripts share: command-line values, the benchmarked training step, where a
run ran (device, CPU, versions) and timing summaries.

Imports nothing heavy at module level: memory.py must set XLA_FLAGS (fake CPU devices) before JAX
creates its backends, and the scripts must run where TensorFlow and ml_collections are absent.
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

# A script measures the checkout it lives in, installed or not; so do the worker processes that
# throughput.py --isolate starts from the same file.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(1, REPO_ROOT)

LR, WEIGHT_DECAY = 1e-4, 0.05  # the benchmarked AdamW (the same in every script, and for timm)

# /proc/cpuinfo flags that decide which matmul kernels XLA and torch can use on a CPU.
VECTOR_FLAGS = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16',
                'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8', 'asimd', 'sve', 'sve2', 'bf16', 'i8mm')


# -- command-line values ---------------------------------------------------------------------------

def override_arg(text: str) -> Tuple[str, Any]:
    """argparse `type=` for `--override KEY=VALUE`: the registry's one parser, with argparse's error."""
    from swinv2_jax.models.registry import parse_override
    try:
        return parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'--override wants KEY=VALUE: {exc}') from None


def literal(text: str):
    """A command-line value: a Python literal if it parses as one, else the bare string."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


# -- the benchmarked training step -----------------------------------------------------------------

AUX_WEIGHT = 0.4  # a segmentation model's auxiliary head (mmsegmentation's weight)


def segmentation_loss_fn(model):
    """Per-pixel cross-entropy of a UperNet in train mode plus 0.4 x its auxiliary head's, y being
    [B, H, W] labels; BatchNorm on the batch (its running statistics start at their init values:
    they are updated, not differentiated)."""
    import jax
    import jax.numpy as jnp
    import optax
    h, w = model.img_size
    stats = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                           jax.ShapeDtypeStruct((1, h, w, model.in_chans), jnp.float32))['batch_stats']

    def loss(params, x, y, seed=0):
        batch_stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)
        (logits, aux), _ = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                       mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(seed)})
        out = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        if aux is not None:
            out = out + AUX_WEIGHT * optax.softmax_cross_entropy_with_integer_labels(aux, y).mean()
        return out
    return loss


def is_segmentation(model) -> bool:
    from swinv2_jax.models import UperNet
    return isinstance(model, UperNet)


def loss_fn(model):
    """Cross-entropy of the model in train mode (stochastic depth / dropout drawn from `seed`); a
    segmentation model's per pixel (`segmentation_loss_fn`)."""
    import jax
    import jax.numpy as jnp
    import optax
    if is_segmentation(model):
        return segmentation_loss_fn(model)

    def loss(params, x, y, seed=0):
        logits = model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(seed)})
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()
    return loss


def make_train_step(model):
    """(optimizer, step): forward in train mode, cross-entropy, backward, AdamW update.

    `step(params, opt_state, x, y[, seed])` returns (params, opt_state, loss); jit it with
    `donate_argnums=(0, 1)` and initialise the state with `optimizer.init(params)`. Left out, the
    dropout seed is the constant 0; memory.py passes it to lower the step on abstract inputs.
    """
    import jax
    import optax

    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    loss = loss_fn(model)

    def train_step(params, opt_state, x, y, seed=0):
        value, grads = jax.value_and_grad(loss)(params, x, y, seed)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return tx, train_step


# -- where the run ran -----------------------------------------------------------------------------

def cpu_info() -> Dict[str, Any]:
    """The CPU's model name, core count and the vector extensions among VECTOR_FLAGS it has."""
    name, flags = '', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and not name:
                    name = value.strip()
                elif key in ('flags', 'Features') and not flags:   # x86, arm64
                    flags = set(value.split())
    except OSError:
        pass
    return {'model': name or platform.processor() or platform.machine(), 'cores': os.cpu_count(),
            'vector_extensions': [f for f in VECTOR_FLAGS if f in flags]}


def cpu_name() -> str:
    return cpu_info()['model']


def package_version(pkg: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:  # noqa: BLE001 - not installed
        return None


def versions(*packages: str) -> Dict[str, Optional[str]]:
    """Python's and each installed package's version (metadata only: nothing is imported)."""
    out: Dict[str, Optional[str]] = {'python': platform.python_version()}
    out.update({p: package_version(p) for p in packages})
    return out


def jax_device_name() -> str:
    """'cpu: MODEL NAME' or 'gpu: NVIDIA H100 ...': the first JAX device, the CPU named."""
    import jax
    d = jax.devices()[0]
    kind = cpu_name() if d.platform == 'cpu' else (getattr(d, 'device_kind', '') or '')
    return f'{d.platform}: {kind}'.strip()


# -- timing ----------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], sync: Callable[[Any], None], iters: int) -> float:
    """Seconds for `iters` back-to-back calls, synchronised once at the end."""
    t0 = time.perf_counter()
    out = None
    for _ in range(iters):
        out = fn()
    sync(out)
    return time.perf_counter() - t0


def summary(values: List[float]) -> Dict[str, float]:
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


# -- output ----------------------------------------------------------------------------------------

def log(msg: str, quiet: bool = False) -> None:
    """Progress, to stderr: stdout carries the table and the final JSON line."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def short_error(exc: BaseException, limit: int = 600) -> str:
    text = f'{type(exc).__name__}: {exc}'.strip().replace('\n', ' | ')
    return text if len(text) <= limit else text[:limit] + ' ...'


def jsonable(v):
    """A value json.dumps can write: numpy scalars as numbers, tuples as lists, the rest as str."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)
