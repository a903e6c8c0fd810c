"""The device mesh and where every array of the training state lives: ONE module, rules over paths.

The mesh is 1-D, axis 'data', over all devices of all processes. The batch is split over 'data'.
The training state's placement is chosen by `config.sharding`, a mode that names a list of rules
`(regex over the leaf's path, rule)`; the first matching regex wins. A path is the '/'-joined keys
of the state tree, e.g. `params/layers_2/blocks_0/attn/qkv/kernel` or
`opt_state/1/0/mu/layers_2/blocks_0/attn/qkv/kernel`, and a rule maps (path, shape, mesh) to a
PartitionSpec. Model code knows nothing of meshes. The modes:

  replicated  every leaf on every device (plain data parallelism).
  zero1       the optimizer state (`opt_state/...`: AdamW's mu and nu, gradient-accumulation
              buffers) sharded over 'data'; parameters and their EMA replicated (ZeRO stage 1,
              the paper's setting). Each device updates its slice of the parameters and the
              step's pinned out_shardings all-gather them back to replicated.
  fsdp        parameters, EMA and optimizer state all sharded (ZeRO stage 3): XLA all-gathers a
              parameter where the forward and backward passes use it.

The sharding rule (`shard_largest_divisible_axis`): a leaf is split along its largest axis whose
size the number of devices divides (the first such axis on ties); it stays replicated when it has
fewer than `MIN_SHARD_SIZE` elements (a LayerNorm scale, a bias: splitting them saves nothing and
costs a collective each) or when no axis is divisible. So the per-device bytes of a sharded
subtree are (its bytes / N) + (the bytes of its replicated small or indivisible leaves).

Every leaf is placed by `jax.jit(init, out_shardings=...)` and the train step pins the same
out_shardings, so nothing is materialised on one device first and a step cannot silently return
another layout (without them a zero1 step would hand back sharded parameters).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'

Rule = Callable[[str, Tuple[int, ...], Mesh], P]


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ('data',) mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------

# Leaves with fewer elements stay replicated under every mode (4 KiB in float32).
MIN_SHARD_SIZE = 1024


def replicate(path: str, shape: Tuple[int, ...], mesh: Mesh) -> P:
    del path, shape, mesh
    return P()


def shard_largest_divisible_axis(path: str, shape: Tuple[int, ...], mesh: Mesh) -> P:
    """'data' on the largest axis that the device count divides (the first on ties); replicated
    below MIN_SHARD_SIZE elements, when no axis divides, or on a 1-device mesh."""
    del path
    n = int(mesh.shape[DATA_AXIS])
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARD_SIZE:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):   # stable: first axis on ties
        if shape[axis] % n == 0:
            return P(*([None] * axis + [DATA_AXIS]))
    return P()


# mode -> [(regex over the state path, rule)], first match wins; every mode ends with a catch-all
MODES: Dict[str, List[Tuple[str, Rule]]] = {
    'replicated': [('.*', replicate)],
    'zero1': [('opt_state/.*', shard_largest_divisible_axis),
              ('.*', replicate)],                      # step, params, ema_params
    'fsdp': [('(params|ema_params|opt_state)/.*', shard_largest_divisible_axis),
             ('.*', replicate)],                       # step
}


def _path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ('key', 'name', 'idx'):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return '/'.join(parts)


def partition_specs(tree: Any, mesh: Mesh, mode: str = 'replicated') -> Any:
    """A PartitionSpec for every leaf of `tree` (arrays or shape structs) under `mode`."""
    if mode not in MODES:
        raise ValueError(f'unknown sharding mode {mode!r} (config key `sharding`); use one of: '
                         f'{", ".join(MODES)}')
    rules = [(re.compile(r), fn) for r, fn in MODES[mode]]

    def spec(path, leaf):
        name = _path_str(path)
        shape = tuple(np.shape(leaf))
        for regex, fn in rules:
            if regex.fullmatch(name):
                return fn(name, shape, mesh)
        raise ValueError(f'sharding mode {mode!r} has no rule for {name}')
    return jax.tree_util.tree_map_with_path(spec, tree)


def state_shardings(abstract_state: Any, mesh: Mesh, mode: str = 'replicated') -> Any:
    """NamedShardings for the training state (a pytree of arrays or jax.ShapeDtypeStruct)."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), partition_specs(abstract_state, mesh, mode),
                        is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """Shape structs carrying their sharding (an Orbax restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def bytes_per_device(tree: Any) -> int:
    """Bytes of `tree` held on the first local device (arrays), for the memory log."""
    device = jax.local_devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, 'addressable_shards', ()):
            if shard.device == device:
                total += shard.data.size * shard.data.dtype.itemsize
    return int(total)


def global_bytes(tree: Any) -> int:
    """Bytes of `tree`'s global arrays (what one device would hold if they were replicated)."""
    return int(sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> int:
    """The per-process batch; the global one must split evenly over processes and devices."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if batch_size % n_dev or batch_size % n_proc:
        raise ValueError(f'{what}={batch_size} must be a multiple of the {n_dev} devices (and '
                         f'{n_proc} processes) of the mesh; try {max(n_dev, batch_size // n_dev * n_dev)}')
    return batch_size // n_proc


def sharded_bytes_per_device(abstract: Any, shardings: Any) -> int:
    """Bytes per device of `abstract` (arrays or shape structs) laid out by `shardings`, from the
    shard shapes alone: nothing is allocated (the memory benchmark's 3B-parameter state)."""
    total = 0
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        total += int(np.prod(s.shard_shape(tuple(a.shape)), dtype=np.int64)) * np.dtype(a.dtype).itemsize
    return int(total)
