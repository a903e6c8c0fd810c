"""Activation amplitudes of the main branch: the output of every block, as the paper's Fig. 2 plots.

`block_amplitudes(model, variables, images)` runs one forward pass and returns, block by block in
depth order, the mean absolute value and the maximum absolute value of the block's output (the
main branch after the block's residual additions, before any SwinV2-H/G extra norm). The outputs
are read with flax's `capture_intermediates`, so the model code is untouched and the numbers are
those of the ordinary forward pass.
"""
from __future__ import annotations

from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2Block


def block_names(model) -> List[str]:
    """'layers_i/blocks_j' of every block, in depth order."""
    return [f'layers_{i}/blocks_{j}' for i, d in enumerate(model.depths) for j in range(d)]


def block_amplitudes(model, variables, images) -> Dict[str, List[float]]:
    """{'block': names, 'mean_abs': [...], 'max_abs': [...]} over the whole batch, one entry per block."""
    def forward(variables, images):
        _, state = model.apply(variables, images, capture_intermediates=lambda mdl, _: isinstance(
            mdl, SwinTransformerV2Block), mutable=['intermediates'])
        flat = traverse_util.flatten_dict(unfreeze(state['intermediates']), sep='/')
        outs = {k[:-len('/__call__')]: v[0] for k, v in flat.items()}
        return {k: (jnp.mean(jnp.abs(x)), jnp.max(jnp.abs(x))) for k, x in outs.items()}

    stats = jax.device_get(jax.jit(forward)(variables, images))
    names = block_names(model)
    missing = [n for n in names if n not in stats]
    if missing:
        raise ValueError(f'no captured output for blocks {missing}: is the model a SwinTransformerV2?')
    return {'block': names, 'mean_abs': [float(stats[n][0]) for n in names],
            'max_abs': [float(stats[n][1]) for n in names]}


def post_norms_to_one(params):
    """The params with every block's norm1/norm2 scale set to one (bias unchanged): res-post-norm's
    zero-initialised norms make each block the identity at the start; at one, the blocks act."""
    flat = traverse_util.flatten_dict(unfreeze(params))
    out = {}
    for path, v in flat.items():
        if len(path) >= 2 and path[-2] in ('norm1', 'norm2') and path[-1] == 'scale' and \
                any(p.startswith('blocks_') for p in path):
            v = jnp.ones_like(v)
        out[path] = v
    return traverse_util.unflatten_dict(out)


def discrepancy(values) -> float:
    """Largest over smallest of a list of amplitudes (the paper's 'discrepancy across layers')."""
    values = np.asarray(values, np.float64)
    return float(values.max() / max(values.min(), 1e-30))
