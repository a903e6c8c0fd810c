"""The `simmim` training objective (config `objective = 'simmim'`): masked image modelling.

What differs from classification, and nothing else (the loop, optimizer, checkpoints, resume and
sharding are the trainer's):
- the model is `SimMIM(encoder)`, the encoder `create_model(config.model, **model_overrides,
  use_mask_token=True, num_classes=0)`; `config.simmim.norm_target_window` (0 = raw pixels);
- the input pipeline adds `mim_mask` to every batch (swinv2_jax/data/simmim_mask.py: drawn from
  (seed, step, example), so resumes repeat it); labels are read but not used;
- the train step minimises the masked L1 loss (no Mixup/CutMix, no labels);
- evaluation reports the held-out reconstruction loss `eval_loss` over `config.eval_split`
  (masks keyed by (seed, example index): the same masks at every evaluation).
Checkpoints hold the SimMIM parameters (`encoder/...`, `encoder/mask_token`, `decoder/...`), and
their meta says `objective: simmim`, so `init_from` can take the encoder of a run for fine-tuning.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from swinv2_jax.models import create_model, model_fields, model_from_fields
from swinv2_jax.models.simmim import SimMIM, create_simmim, expand_mask
from swinv2_jax.train import config_lib

OBJECTIVES = ('classification', 'simmim')


def objective(config) -> str:
    name = config.get('objective', 'classification')
    if name not in OBJECTIVES:
        raise ValueError(f'unknown objective {name!r}; valid: {", ".join(OBJECTIVES)}')
    return name


def enabled(config) -> bool:
    return objective(config) == 'simmim'


def default_config() -> ml_collections.ConfigDict:
    return config_lib.base_simmim()


def build_model(config) -> SimMIM:
    overrides = config_lib.as_overrides(config)
    overrides.update(use_mask_token=True, num_classes=0)
    encoder = create_model(config.model, **overrides)
    if float(config.optim.get('layer_decay', 1.0)) != 1.0:
        raise ValueError(f'optim.layer_decay={config.optim.layer_decay} with objective simmim: layer-wise lr '
                         f'decay belongs to fine-tuning (official SimMIM pre-training has none, and its ids '
                         f'are those of a classifier); set --config.optim.layer_decay=1.0')
    mim = config.get('simmim', None) or default_config()
    mask_patch = int(mim.get('mask_patch_size', 32))
    if mask_patch % encoder.patch_size:
        raise ValueError(f'simmim.mask_patch_size {mask_patch} is not a multiple of the model patch size '
                         f'{encoder.patch_size}: a mask block must cover whole tokens')
    return create_simmim(encoder, int(mim.get('norm_target_window', 0)))


def meta_fields(model: SimMIM) -> Dict[str, Any]:
    """What a checkpoint's meta records of the model (its encoder's fields + the SimMIM ones)."""
    return {'model': model_fields(model.encoder), 'objective': 'simmim',
            'simmim': {'norm_target_window': int(model.norm_target_window)}}


def model_from_meta(meta: Dict[str, Any]) -> SimMIM:
    return create_simmim(model_from_fields(meta['model']),
                         int(meta.get('simmim', {}).get('norm_target_window', 0)))


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------

def train_step(state, batch: Dict[str, jax.Array], *, model: SimMIM, tx, schedule, seed: int,
               grad_accum_steps: int, ema_decay: float):
    from swinv2_jax.train.trainer import apply_gradients, step_rngs   # shared with classification
    _, dropout_rng = step_rngs(seed, state.step)

    def loss_fn(params):
        loss, _ = model.apply({'params': params}, batch['image'], batch['mim_mask'], train=True,
                              rngs={'dropout': dropout_rng})
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return apply_gradients(state, loss, grads, tx=tx, schedule=schedule,
                           grad_accum_steps=grad_accum_steps, ema_decay=ema_decay)


def eval_step(params, batch: Dict[str, jax.Array], *, model: SimMIM) -> Dict[str, jax.Array]:
    """Sums over the valid examples: |target - rec| over masked pixels, masked pixels, examples."""
    x = batch['image']
    valid = batch['mask'].astype(jnp.float32)
    _, rec = model.apply({'params': params}, x, batch['mim_mask'], train=False)
    target = model.apply({'params': params}, x, method=SimMIM.target)
    pixels = expand_mask(batch['mim_mask'], tuple(model.img_size)).astype(jnp.float32) * valid[:, None, None]
    err = jnp.sum(jnp.abs(target - rec), axis=-1) / model.in_chans      # mean over channels
    return {'abs_err': jnp.sum(err * pixels), 'pixels': jnp.sum(pixels), 'count': jnp.sum(valid)}


def evaluate(p_eval_step, params, config, image_size, local_batch_size, data_sharding) -> Dict[str, float]:
    """`eval_loss` (the masked L1 loss over the whole held-out set) and `eval_examples`, per
    evaluation set."""
    from swinv2_jax.train.trainer import _data, eval_totals, metric_prefix
    out = {}
    for i, name in enumerate(_data().eval_names(config)):
        prefix = metric_prefix(i, name)
        totals = eval_totals(p_eval_step, params, config, name, image_size, local_batch_size, data_sharding)
        out.update({f'{prefix}_loss': float(totals['abs_err']) / (float(totals['pixels']) + 1e-5),
                    f'{prefix}_examples': int(totals['count'])})
    return out


def step_functions(model: SimMIM, tx, schedule, config, grad_accum_steps: int, ema_decay: float
                   ) -> Tuple[Callable, Callable, Callable]:
    """(train_step, eval_step, evaluate) of the objective, for the trainer to jit."""
    step = functools.partial(train_step, model=model, tx=tx, schedule=schedule, seed=int(config.seed),
                             grad_accum_steps=grad_accum_steps, ema_decay=ema_decay)
    return step, functools.partial(eval_step, model=model), evaluate


__all__ = ['OBJECTIVES', 'build_model', 'default_config', 'enabled', 'eval_step', 'evaluate', 'meta_fields',
           'model_from_meta', 'objective', 'step_functions', 'train_step']
