"""Training objectives as a table: `config.objective` picks one row, once.

Each row is one module with the same small interface (the trainer and init_from use nothing else):

    NAME                                  the `config.objective` value (and a checkpoint's meta)
    MODEL_TYPE                            the flax module class its models are
    build_model(config, num_classes)      the model the run trains
    step_functions(model, config, *, tx, schedule)
                                          (train_step(state, batch), eval_step(params, batch)), to jit;
                                          eval_step returns sums over the batch, padding masked out
    eval_metrics(prefix, totals)          an evaluation set's metrics from those sums
    meta_fields(model)                    what a checkpoint's meta records of the model
    model_from_meta(meta)                 the model rebuilt from that meta (init_from of a run)
    backbone_params(params, source_name)  what a classifier fine-tuned from a run of this objective
                                          takes of its params
    load_torch(path, model), TORCH_FILES  optional: a target of this objective is initialised from a
                                          source of its own kind, whole (a run of it, or a PyTorch
                                          file of the kind TORCH_FILES names, read by load_torch);
                                          without them, from classifier sources (init_from.py)
    data()                                optional: the input package of its runs (default
                                          swinv2_jax.data); segmentation reads masks

The trainer also reads `img_size`, `in_chans` and `depths` (layer-wise lr decay ids) of the model
and initialises it with `model.init(rng, images)`. A new objective is one module and one row below.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Dict

from swinv2_jax.train.objectives import classification, segmentation, simmim

OBJECTIVES: Dict[str, ModuleType] = {
    classification.NAME: classification,
    simmim.NAME: simmim,
    segmentation.NAME: segmentation,
}
DEFAULT = classification.NAME   # checkpoints written before `objective` existed are classifiers


def lookup(name: str) -> ModuleType:
    if name not in OBJECTIVES:
        raise ValueError(f'unknown objective {name!r}; valid: {", ".join(OBJECTIVES)}')
    return OBJECTIVES[name]


def get(config) -> ModuleType:
    """The objective module of a training config."""
    return lookup(config.get('objective', DEFAULT))


def for_meta(meta: Dict[str, Any]) -> ModuleType:
    """The objective module of a training checkpoint, from its meta."""
    return lookup(meta.get('objective', DEFAULT))


def for_model(model) -> ModuleType:
    """The objective module whose models `model` is one of."""
    for objective in OBJECTIVES.values():
        if isinstance(model, objective.MODEL_TYPE):
            return objective
    raise TypeError(f'no training objective trains a {type(model).__name__}')


def build_model(config, num_classes: int):
    """The model of the config's objective (num_classes from the data; unused by SimMIM)."""
    return get(config).build_model(config, num_classes)


__all__ = ['DEFAULT', 'OBJECTIVES', 'build_model', 'for_meta', 'for_model', 'get', 'lookup']
