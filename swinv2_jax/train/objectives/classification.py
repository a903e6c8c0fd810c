"""The `classification` training objective (the default): a SwinV2 classifier on soft targets.

The train step mixes the batch (Mixup/CutMix and label smoothing, swinv2_jax.train.mix) and
minimises the soft-target cross-entropy (timm's SoftTargetCrossEntropy); evaluation reports top-1,
top-5 (fractions) and the cross-entropy on the integer labels, per evaluation set.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from swinv2_jax.models import SwinTransformerV2, create_model, model_fields, model_from_fields
from swinv2_jax.train import common, config_lib, mix

NAME = 'classification'
MODEL_TYPE = SwinTransformerV2


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> SwinTransformerV2:
    overrides = config_lib.as_overrides(config)
    overrides.setdefault('num_classes', num_classes)
    return create_model(config.model, **overrides)


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------

def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over the batch of -sum(targets * log_softmax(logits)) (timm SoftTargetCrossEntropy)."""
    return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))


def train_step(state: common.TrainState, batch: Dict[str, jax.Array], *, model, tx, schedule, mix_fn,
               seed: int, grad_accum_steps: int, ema_decay: float) -> Tuple[common.TrainState, Dict]:
    mix_rng, dropout_rng = common.step_rngs(seed, state.step)
    images, targets = mix_fn(mix_rng, batch['image'], batch['label'])

    def loss_fn(params):
        logits = model.apply({'params': params}, images, train=True, rngs={'dropout': dropout_rng})
        return soft_cross_entropy(logits, targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return common.apply_gradients(state, loss, grads, tx=tx, schedule=schedule,
                                  grad_accum_steps=grad_accum_steps, ema_decay=ema_decay)


def eval_step(params, batch: Dict[str, jax.Array], *, model) -> Dict[str, jax.Array]:
    """Sums over the batch (padding masked out): top-1/top-5 hits, loss, example count."""
    logits = model.apply({'params': params}, batch['image'], train=False).astype(jnp.float32)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    hit1 = (top[:, 0] == labels).astype(jnp.float32)
    hit5 = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {'top1': jnp.sum(hit1 * mask), 'top5': jnp.sum(hit5 * mask), 'loss': jnp.sum(loss * mask),
            'count': jnp.sum(mask)}


def eval_metrics(prefix: str, totals: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Top-1/top-5 (fractions) and the mean loss of one evaluation set."""
    n = max(float(totals['count']), 1.0)
    return {f'{prefix}_top1': float(totals['top1']) / n, f'{prefix}_top5': float(totals['top5']) / n,
            f'{prefix}_loss': float(totals['loss']) / n, f'{prefix}_examples': int(totals['count'])}


def step_functions(model: SwinTransformerV2, config: ml_collections.ConfigDict, *, tx, schedule
                   ) -> Tuple[Callable, Callable]:
    """(train_step(state, batch), eval_step(params, batch)) for the trainer to jit."""
    mix_fn = functools.partial(_mix, num_classes=model.num_classes, aug=config.aug)
    step = functools.partial(train_step, model=model, mix_fn=mix_fn, seed=int(config.seed),
                             **common.update_options(config, tx=tx, schedule=schedule))
    return step, functools.partial(eval_step, model=model)


def _mix(rng, images, labels, *, num_classes, aug):
    return mix.mix(rng, images, labels, num_classes, aug)


# ----------------------------------------------------------------------------------------------
# Checkpoint meta and fine-tuning sources
# ----------------------------------------------------------------------------------------------

def meta_fields(model: SwinTransformerV2) -> Dict[str, Any]:
    """What a checkpoint's meta records of the model (no `objective` key: the default)."""
    return {'model': model_fields(model)}


def model_from_meta(meta: Dict[str, Any]) -> SwinTransformerV2:
    return model_from_fields(meta['model'])


def backbone_params(params: Dict, source_name: str = '') -> Dict:
    """What a classifier fine-tuned from a classification run takes: all of it (init_from then keeps
    or re-initialises the head by its shape)."""
    del source_name
    return params


__all__ = ['MODEL_TYPE', 'NAME', 'backbone_params', 'build_model', 'eval_metrics', 'eval_step', 'meta_fields',
           'model_from_meta', 'soft_cross_entropy', 'step_functions', 'train_step']
