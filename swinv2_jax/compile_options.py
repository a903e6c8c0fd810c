"""XLA compiler options per purpose (inference or training), measured on this project's models.

On XLA:CPU (jaxlib 0.10), YNNPACK takes the matmuls by default. For the forward pass alone,
Eigen's matmuls are faster on these shapes; for the training step YNNPACK is (the figures are in
benchmarks/README.md). Only the eval step and inference use these options; the numbers differ
only in float32 rounding. GPU and other backends get no options.

    fwd = jax.jit(model.apply, compiler_options=inference_compiler_options())
"""
from __future__ import annotations

import functools
from typing import Dict

import jax
import jax.numpy as jnp

_CPU_INFERENCE = {'xla_cpu_experimental_ynn_fusion_type': ''}  # empty list: no YNNPACK fusions


@functools.lru_cache(maxsize=None)
def _accepted(backend: str, key: str, value: str) -> bool:
    """Whether this jaxlib's compiler knows the option: a newer or older XLA may have renamed or
    dropped an experimental flag, and an unknown option fails the compile."""
    try:
        jax.jit(lambda a: a + 1).lower(jnp.zeros(())).compile({key: value})
        return True
    except Exception:  # noqa: BLE001 - any refusal means: do not pass it
        return False


def inference_compiler_options(backend: str | None = None) -> Dict[str, str]:
    """`compiler_options` for a jitted forward pass (evaluation, inference) on `backend`
    (default: JAX's default backend). Empty where there is nothing to gain."""
    backend = backend or jax.default_backend()
    if backend != 'cpu':
        return {}
    return {k: v for k, v in _CPU_INFERENCE.items() if _accepted(backend, k, v)}
