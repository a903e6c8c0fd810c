"""Training: `train_and_evaluate(config, workdir)` and its parts (optimizer, sharding, checkpoints,
metrics, fine-tuning initialisation). TensorFlow is imported only by the input pipeline
(swinv2_jax.data), on the first call that needs it; `config_lib` imports neither jax nor TF."""

_LAZY = {'train_and_evaluate': 'trainer', 'TrainState': 'trainer', 'NonFiniteLossError': 'trainer'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'swinv2_jax.train.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = list(_LAZY)
