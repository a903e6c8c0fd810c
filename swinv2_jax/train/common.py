"""The step pieces every training objective shares: the state, the rngs of a step, the optimizer
update, batches on the devices and the evaluation totals.

Objectives (swinv2_jax/train/objectives/) build their train and eval steps from these; the trainer
jits them. Nothing here knows which objective runs.
"""
from __future__ import annotations

import collections
import re
from typing import Any, Callable, Dict, Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from swinv2_jax.train import optim


class TrainState(struct.PyTreeNode):
    step: jax.Array                  # int32: batches consumed so far (the data step)
    params: Any
    opt_state: Any
    ema_params: Any = None           # None when optim.ema_decay == 0
    batch_stats: Any = None          # BatchNorm running statistics (segmentation); None without BatchNorm

    def to_checkpoint(self) -> Dict[str, Any]:
        """The tree a checkpoint stores (its keys are the checkpoint format: keep them; the optional
        ones are absent when None, so checkpoints of models without them restore as before)."""
        out = {'step': self.step, 'params': self.params, 'opt_state': self.opt_state}
        if self.ema_params is not None:
            out['ema_params'] = self.ema_params
        if self.batch_stats is not None:
            out['batch_stats'] = self.batch_stats
        return out

    @classmethod
    def from_checkpoint(cls, tree: Dict[str, Any]) -> 'TrainState':
        return cls(step=tree['step'], params=tree['params'], opt_state=tree['opt_state'],
                   ema_params=tree.get('ema_params'), batch_stats=tree.get('batch_stats'))

    def eval_inputs(self, params) -> Any:
        """What an objective's eval step takes first: `params`, or with BatchNorm the flax variables
        {'params': params, 'batch_stats': ...} (also on a tree of shardings)."""
        return params if self.batch_stats is None else {'params': params, 'batch_stats': self.batch_stats}


# ----------------------------------------------------------------------------------------------
# Randomness: a function of (seed, step) only, so that a resumed run repeats it
# ----------------------------------------------------------------------------------------------

def init_rng(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 0)


def step_rngs(seed: int, step: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """(mix rng, dropout rng) of a step: a function of (seed, step) only, so resumes repeat them."""
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)
    return jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)


# ----------------------------------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------------------------------

def apply_gradients(state: TrainState, loss: jax.Array, grads: Any, *, tx, schedule,
                    grad_accum_steps: int, ema_decay: float) -> Tuple[TrainState, Dict]:
    """The optimizer update, EMA and step count of every objective's train step, and its metrics."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = optim.ema_update(ema, params, ema_decay, optim.did_update(opt_state, grad_accum_steps))
    # the lr the step used: the schedule at the update count before this step's update
    lr = schedule(state.step // grad_accum_steps)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'lr': lr,
                       'param_norm': optax.tree.norm(params)}


def update_options(config, *, tx, schedule) -> Dict[str, Any]:
    """The keyword arguments of `apply_gradients` a config fixes (for the objectives' partials)."""
    return dict(tx=tx, schedule=schedule, grad_accum_steps=int(config.optim.grad_accum_steps),
                ema_decay=float(config.optim.ema_decay))


# ----------------------------------------------------------------------------------------------
# Batches on the devices
# ----------------------------------------------------------------------------------------------

def device_batches(iterator: Iterator[Dict[str, np.ndarray]], data_sharding, size: int = 2
                   ) -> Iterator[Dict[str, jax.Array]]:
    """Global arrays from each process' local batches, `size` batches ahead (copies are async)."""
    queue = collections.deque()

    def put(batch):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x), batch)

    for batch in iterator:
        queue.append(put(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


# ----------------------------------------------------------------------------------------------
# Evaluation: each objective's eval step returns sums; these add them over a set
# ----------------------------------------------------------------------------------------------

def metric_prefix(index: int, name: str) -> str:
    """'eval' for the first evaluation set, 'eval_<name>' for the others (imagenet_v2:test ->
    eval_imagenet_v2_test)."""
    return 'eval' if index == 0 else 'eval_' + re.sub(r'[^0-9A-Za-z]+', '_', name).strip('_')


def eval_totals(p_eval_step, params, batches: Iterator[Dict[str, jax.Array]], name: str
                ) -> Dict[str, np.ndarray]:
    """The sums `p_eval_step` returns, added over every batch of the evaluation set `name`."""
    totals = None
    for batch in batches:
        sums = p_eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError(f'the evaluation set {name!r} is empty')
    return jax.device_get(totals)


def evaluate(p_eval_step, params, *, data, config, image_size, local_batch_size, data_sharding,
             metrics_of: Callable[[str, Dict[str, np.ndarray]], Dict[str, float]]) -> Dict[str, float]:
    """`metrics_of(prefix, totals)` (the objective's) for every evaluation set of the config."""
    out = {}
    for i, name in enumerate(data.eval_names(config)):
        it = data.eval_iterator(config, name, image_size=image_size, local_batch_size=local_batch_size,
                                process_index=jax.process_index(), process_count=jax.process_count())
        totals = eval_totals(p_eval_step, params, device_batches(it, data_sharding), name)
        out.update(metrics_of(metric_prefix(i, name), totals))
    return out


__all__ = ['TrainState', 'apply_gradients', 'device_batches', 'eval_totals', 'evaluate', 'init_rng',
           'metric_prefix', 'step_rngs', 'update_options']
