"""swinv2-jax: Swin Transformer V2 in JAX/Flax with exact parity to the PyTorch implementations."""
import importlib

from swinv2_jax.models import (SwinTransformerV2, UperNet, create_model, list_models, list_segmentation_models,
                               model_fields, model_from_fields)

__version__ = '0.1.0'

# Imported on first use: the converted format pulls in Orbax, and `python -m swinv2_jax.convert`
# must not find its module already imported by the package (runpy's RuntimeWarning).
_LAZY = {
    'load_torch_weights': 'swinv2_jax.weights.pytorch',
    'export_torch_weights': 'swinv2_jax.weights.pytorch',
    'load_converted': 'swinv2_jax.weights.converted',
    'save_converted': 'swinv2_jax.weights.converted',
}

__all__ = ['SwinTransformerV2', 'UperNet', 'create_model', 'list_models', 'list_segmentation_models',
           'model_fields', 'model_from_fields',
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
