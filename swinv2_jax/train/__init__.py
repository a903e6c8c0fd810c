"""Training: `train_and_evaluate(config, workdir)` (trainer.py) and its parts: the shared step pieces
(common.py), the objectives table (objectives/), optimizer, sharding, checkpoints, metrics,
Mixup/CutMix (mix.py) and fine-tuning initialisation (init_from.py). TensorFlow is imported only by
the input pipeline (swinv2_jax.data), on the first call that needs it; `config_lib` imports neither
jax nor TF."""

_LAZY = {'train_and_evaluate': 'trainer', 'TrainState': 'common', 'NonFiniteLossError': 'trainer'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'swinv2_jax.train.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = list(_LAZY)
