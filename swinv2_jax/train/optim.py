"""AdamW with the official SwinV2 recipe's details, as one optax chain.

    clip_by_global_norm(clip_grad) -> adamw(schedule, weight decay on `decay_mask` leaves)
      -> per-leaf layer-wise lr scale -> [optax.MultiSteps for gradient accumulation]

- Learning rates are per 512 images (official `main.py`): lr, warmup_lr and min_lr are all
  multiplied by `batch_size * grad_accum_steps / 512`.
- Schedule (timm CosineLRScheduler stepped per update, as the official repo): linear warm-up from
  warmup_lr to lr over the warm-up updates, then cosine from lr to min_lr at the last update.
  `schedule='multistep'` (official SimMIM pre-training; timm MultiStepLRScheduler): the same
  warm-up, then lr * decay_rate ** (number of `decay_epochs` milestones passed).
- Weight decay is off for biases, norms, every 1-D parameter, `logit_scale` and the CPB meta
  network (`cpb_mlp_*`): the official `skip_keywords` of SwinV2 (`cpb_mlp`, `logit_scale`) plus
  its `len(shape) == 1 or name.endswith('.bias')` rule.
- Layer-wise lr decay uses the official `get_swin_layer` ids (see `layer_id`), scale
  `layer_decay ** (num_layers - 1 - id)` with num_layers = sum(depths) + 2; PyTorch applies it to
  the group lr, which scales the weight-decay term too, so here it scales the whole update.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

Path = Tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# Schedule
# ----------------------------------------------------------------------------------------------

def scaled_lrs(optim_config, effective_batch: int) -> Dict[str, float]:
    """{'lr', 'warmup_lr', 'min_lr'} for this batch (the config gives them per 512 images)."""
    scale = effective_batch / 512.0
    return {k: float(optim_config[k]) * scale for k in ('lr', 'warmup_lr', 'min_lr')}


def warmup_steps(optim_config, updates_per_epoch: float) -> int:
    if int(optim_config.get('warmup_steps', -1)) >= 0:
        return int(optim_config.warmup_steps)
    return int(round(float(optim_config.warmup_epochs) * updates_per_epoch))


def make_schedule(lr: float, warmup_lr: float, min_lr: float, warmup: int,
                  total_updates: int) -> optax.Schedule:
    """Linear warm-up warmup_lr -> lr over `warmup` updates, then cosine lr -> min_lr at the end."""
    warmup = max(0, min(int(warmup), int(total_updates)))
    decay = max(1, int(total_updates) - warmup)
    cosine = optax.cosine_decay_schedule(lr, decay, alpha=(min_lr / lr) if lr else 0.0)
    if warmup == 0:
        return cosine
    linear = optax.linear_schedule(warmup_lr, lr, warmup)
    return optax.join_schedules([linear, cosine], [warmup])


def make_poly_schedule(lr: float, warmup_lr: float, min_lr: float, warmup: int, total_updates: int,
                       power: float = 1.0) -> optax.Schedule:
    """mmcv's PolyLrUpdaterHook with linear warm-up (mmsegmentation's recipes, power 1: linear decay):
    poly(t) = (lr - min_lr) * (1 - t / total) ** power + min_lr, times the warm-up factor
    1 - (1 - t / warmup) * (1 - warmup_lr / lr) while t < warmup (mmcv scales the poly value)."""
    total, warmup = max(int(total_updates), 1), max(0, int(warmup))
    ratio = (warmup_lr / lr) if lr else 0.0

    def schedule(count):
        t = jnp.minimum(jnp.asarray(count, jnp.float32), total)
        poly = (lr - min_lr) * jnp.power(1.0 - t / total, power) + min_lr
        if warmup == 0:
            return poly
        return jnp.where(t < warmup, poly * (ratio + (1.0 - ratio) * t / warmup), poly)  # = 1 - (1 - t/w)(1 - r)
    return schedule


def make_multistep_schedule(lr: float, warmup_lr: float, warmup: int, milestones, gamma: float
                            ) -> optax.Schedule:
    """timm MultiStepLRScheduler per update: linear warm-up warmup_lr -> lr over `warmup` updates,
    then lr * gamma ** (number of milestones <= t) (milestones in updates, counted from 0)."""
    milestones = sorted(int(m) for m in milestones)
    warmup = max(0, int(warmup))

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        passed = sum((t >= m).astype(jnp.float32) for m in milestones) if milestones else 0.0
        decayed = lr * jnp.power(jnp.float32(gamma), passed)
        if warmup == 0:
            return decayed
        return jnp.where(t < warmup, warmup_lr + (lr - warmup_lr) * t / warmup, decayed)
    return schedule


# ----------------------------------------------------------------------------------------------
# Weight decay mask and layer-wise lr decay (rules over parameter paths)
# ----------------------------------------------------------------------------------------------

NO_DECAY_NAMES = ('logit_scale',)          # 3-D [heads, 1, 1], so the 1-D rule misses it
# Swin V1's position bias table (2-D): official V1 `no_weight_decay_keywords`, timm's `no_weight_decay`.
NO_DECAY_NAMES += ('relative_position_bias_table',)
NO_DECAY_MODULE = re.compile(r'^cpb_mlp_\d+$')  # the continuous position bias meta network


def is_decayed(path: Path, leaf) -> bool:
    """Weight decay applies to this parameter: not a bias, norm, 1-D leaf, logit_scale or CPB MLP."""
    if jnp.ndim(leaf) <= 1 or path[-1] == 'bias':
        return False
    if path[-1] in NO_DECAY_NAMES or any(NO_DECAY_MODULE.match(p) for p in path):
        return False
    return True


def decay_mask(params) -> Any:
    """A tree of bools like `params`: True where weight decay applies (works on shape structs)."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p: is_decayed(p, v) for p, v in flat.items()})


def layer_id(path: Path, depths: Sequence[int]) -> int:
    """The official `get_swin_layer` id of a parameter, on this project's (timm) paths.

    patch_embed -> 0; block j of stage i -> sum(depths[:i]) + j + 1 (its extra_norm_j with it);
    the patch merging at the start of stage i (official: `layers.{i-1}.downsample`, the end of the
    previous stage) -> sum(depths[:i]), the id of the previous stage's last block; everything
    else (final norm, head) -> sum(depths) + 1.
    """
    top = path[0]
    if top.startswith('patch_embed'):
        return 0
    m = re.match(r'^layers_(\d+)$', top)
    if m:
        i = int(m.group(1))
        start = sum(depths[:i])
        sub = path[1]
        if sub == 'downsample':
            return start
        b = re.match(r'^(?:blocks|extra_norm)_(\d+)$', sub)
        if b:
            return start + int(b.group(1)) + 1
        raise ValueError(f'no layer id rule for parameter {"/".join(path)}')
    return sum(depths) + 1


def layer_scales(params, depths: Sequence[int], layer_decay: float) -> Any:
    """A tree like `params` of lr multipliers `layer_decay ** (num_layers - 1 - layer_id)`."""
    num_layers = sum(depths) + 2
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {p: float(layer_decay) ** (num_layers - 1 - layer_id(p, depths)) for p in flat})


def scale_by_tree(scales) -> optax.GradientTransformation:
    """Multiply each update leaf by a fixed per-leaf constant."""
    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _cosine(lrs, optim_config, *, warmup, total_updates, updates_per_epoch):
    return make_schedule(lrs['lr'], lrs['warmup_lr'], lrs['min_lr'], warmup, total_updates)


def _linear(lrs, optim_config, *, warmup, total_updates, updates_per_epoch):
    return make_poly_schedule(lrs['lr'], lrs['warmup_lr'], lrs['min_lr'], warmup, total_updates)


def _multistep(lrs, optim_config, *, warmup, total_updates, updates_per_epoch):
    milestones = [round(float(e) * updates_per_epoch) for e in optim_config.get('decay_epochs', ())]
    return make_multistep_schedule(lrs['lr'], lrs['warmup_lr'], warmup, milestones,
                                   float(optim_config.get('decay_rate', 0.1)))


# `optim.schedule` -> its learning-rate schedule (the start-up config check reads the names here)
SCHEDULES = {'cosine': _cosine, 'linear': _linear, 'multistep': _multistep}


# ----------------------------------------------------------------------------------------------
# The optimizer
# ----------------------------------------------------------------------------------------------

def make_optimizer(optim_config, params, depths: Sequence[int], total_updates: int,
                   updates_per_epoch: float, effective_batch: int
                   ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
    """`(tx, schedule)`; `schedule(update_count)` is the head's (undecayed) learning rate.

    `params` may be abstract (jax.ShapeDtypeStruct leaves): only paths and shapes are read.
    With grad_accum_steps = k > 1 the chain is wrapped in optax.MultiSteps: one update (and one
    schedule tick) every k calls, on the mean of the k gradients.
    """
    lrs = scaled_lrs(optim_config, effective_batch)
    kind = optim_config.get('schedule', 'cosine')
    if kind not in SCHEDULES:
        raise ValueError(f'unknown optim.schedule {kind!r}; valid: {", ".join(map(repr, SCHEDULES))}')
    schedule = SCHEDULES[kind](lrs, optim_config, warmup=warmup_steps(optim_config, updates_per_epoch),
                               total_updates=total_updates, updates_per_epoch=updates_per_epoch)
    b1, b2 = optim_config.betas
    parts = []
    if float(optim_config.clip_grad) > 0:
        parts.append(optax.clip_by_global_norm(float(optim_config.clip_grad)))
    parts.append(optax.adamw(schedule, b1=float(b1), b2=float(b2), eps=float(optim_config.eps),
                             weight_decay=float(optim_config.weight_decay), mask=decay_mask))
    if float(optim_config.layer_decay) != 1.0:
        parts.append(scale_by_tree(layer_scales(params, depths, float(optim_config.layer_decay))))
    tx = optax.chain(*parts)
    k = int(optim_config.get('grad_accum_steps', 1))
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)
    return tx, schedule


def did_update(opt_state, grad_accum_steps: int) -> jax.Array:
    """True when the last `tx.update` changed the parameters (always, without accumulation)."""
    if grad_accum_steps > 1:
        return optax.MultiSteps(optax.identity(), grad_accum_steps).has_updated(opt_state)
    return jnp.asarray(True)


def ema_update(ema, params, decay: float, updated):
    """`decay * ema + (1 - decay) * params` where the parameters changed this step."""
    return jax.tree.map(
        lambda e, p: jnp.where(updated, decay * e + (1.0 - decay) * p, e).astype(e.dtype), ema, params)


def describe(params, depths: Sequence[int], optim_config) -> str:
    """One line per layer id (for the log): decayed/undecayed counts and lr scale."""
    flat = traverse_util.flatten_dict(params)
    decay = float(optim_config.layer_decay)
    num_layers = sum(depths) + 2
    rows: Dict[int, list] = {}
    for p, v in flat.items():
        rows.setdefault(layer_id(p, depths), [0, 0])[0 if is_decayed(p, v) else 1] += 1
    lines = [f'layer {i:3d}: lr x {decay ** (num_layers - 1 - i):.4g}, {d} decayed, {n} not decayed'
             for i, (d, n) in sorted(rows.items())]
    return '\n'.join(lines)


__all__ = ['decay_mask', 'describe', 'did_update', 'ema_update', 'is_decayed', 'layer_id', 'layer_scales',
           'make_multistep_schedule', 'make_optimizer', 'make_poly_schedule', 'make_schedule', 'scale_by_tree', 'scaled_lrs', 'warmup_steps']
