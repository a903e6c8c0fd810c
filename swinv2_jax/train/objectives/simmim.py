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
their meta says `objective: simmim`, so `init_from` can take the encoder of a run for fine-tuning
(`backbone_params`), or all of it for continued pre-training (`load_torch` for PyTorch files).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models import create_model, model_fields, model_from_fields
from swinv2_jax.models.simmim import SimMIM, create_simmim, expand_mask
from swinv2_jax.train import common, config_lib
from swinv2_jax.weights import simmim as weights_simmim

NAME = 'simmim'
MODEL_TYPE = SimMIM
# what load_torch reads, as init_from's errors name it
TORCH_FILES = 'an official SimMIM / Hugging Face Swinv2ForMaskedImageModeling file'


def build_model(config: ml_collections.ConfigDict, num_classes: int = 0) -> SimMIM:
    """SimMIM(encoder); `num_classes` is unused (no head)."""
    del num_classes
    overrides = config_lib.as_overrides(config)
    overrides.update(use_mask_token=True, num_classes=0)
    encoder = create_model(config.model, **overrides)
    if float(config.optim.get('layer_decay', 1.0)) != 1.0:
        raise ValueError(f'optim.layer_decay={config.optim.layer_decay} with objective simmim: layer-wise lr '
                         f'decay belongs to fine-tuning (official SimMIM pre-training has none, and its ids '
                         f'are those of a classifier); set --config.optim.layer_decay=1.0')
    mim = config.get('simmim', None) or config_lib.base_simmim()
    mask_patch = int(mim.get('mask_patch_size', 32))
    if mask_patch % encoder.patch_size:
        raise ValueError(f'simmim.mask_patch_size {mask_patch} is not a multiple of the model patch size '
                         f'{encoder.patch_size}: a mask block must cover whole tokens')
    return create_simmim(encoder, int(mim.get('norm_target_window', 0)))


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------

def train_step(state: common.TrainState, batch: Dict[str, jax.Array], *, model: SimMIM, tx, schedule,
               seed: int, grad_accum_steps: int, ema_decay: float) -> Tuple[common.TrainState, Dict]:
    _, dropout_rng = common.step_rngs(seed, state.step)

    def loss_fn(params):
        loss, _ = model.apply({'params': params}, batch['image'], batch['mim_mask'], train=True,
                              rngs={'dropout': dropout_rng})
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return common.apply_gradients(state, loss, grads, tx=tx, schedule=schedule,
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


def eval_metrics(prefix: str, totals: Dict[str, np.ndarray]) -> Dict[str, float]:
    """`<prefix>_loss` (the masked L1 loss over the whole held-out set) and `<prefix>_examples`."""
    return {f'{prefix}_loss': float(totals['abs_err']) / (float(totals['pixels']) + 1e-5),
            f'{prefix}_examples': int(totals['count'])}


def step_functions(model: SimMIM, config: ml_collections.ConfigDict, *, tx, schedule
                   ) -> Tuple[Callable, Callable]:
    """(train_step(state, batch), eval_step(params, batch)) for the trainer to jit."""
    step = functools.partial(train_step, model=model, seed=int(config.seed),
                             **common.update_options(config, tx=tx, schedule=schedule))
    return step, functools.partial(eval_step, model=model)


# ----------------------------------------------------------------------------------------------
# Checkpoint meta and fine-tuning sources
# ----------------------------------------------------------------------------------------------

def meta_fields(model: SimMIM) -> Dict[str, Any]:
    """What a checkpoint's meta records of the model (its encoder's fields + the SimMIM ones)."""
    return {'model': model_fields(model.encoder), 'objective': NAME,
            'simmim': {'norm_target_window': int(model.norm_target_window)}}


def model_from_meta(meta: Dict[str, Any]) -> SimMIM:
    return create_simmim(model_from_fields(meta['model']),
                         int(meta.get('simmim', {}).get('norm_target_window', 0)))


def backbone_params(params: Dict, source_name: str = '') -> Dict:
    """The encoder of SimMIM parameters ({'encoder': ..., 'decoder': ...}) as classifier
    parameters: `encoder/*` without the pre-training-only mask token; the decoder is dropped."""
    if 'encoder' not in params:
        raise ValueError(f'init_from {source_name}: a SimMIM run without encoder/ parameters '
                         f'(top-level: {sorted(params)})')
    encoder = dict(params['encoder'])
    dropped = (['encoder/mask_token'] if encoder.pop('mask_token', None) is not None else []) + [
        'decoder/' + '/'.join(p) for p in traverse_util.flatten_dict(params.get('decoder', {}))]
    logging.info('init_from %s: a SimMIM run; taking its encoder, leaving out (pre-training only): %s',
                 source_name, ', '.join(dropped) or 'nothing')
    return encoder


def load_torch(path: str, model: SimMIM) -> Dict:
    """All of an official SimMIM or Hugging Face Swinv2ForMaskedImageModeling file (continued
    pre-training)."""
    return unfreeze(weights_simmim.load_simmim_weights(path, model)['params'])


__all__ = ['MODEL_TYPE', 'NAME', 'TORCH_FILES', 'backbone_params', 'build_model', 'eval_metrics', 'eval_step', 'load_torch',
           'meta_fields', 'model_from_meta', 'step_functions', 'train_step']
