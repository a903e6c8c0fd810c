"""swinv2-jax: Swin Transformer V2 in JAX/Flax with exact parity to the PyTorch implementations."""
from swinv2_jax.models import (SwinTransformerV2, create_model, list_models, model_fields,
                               model_from_fields)

__version__ = '0.1.0'
__all__ = ['SwinTransformerV2', 'create_model', 'list_models', 'model_fields', 'model_from_fields',
           'load_torch_weights', 'export_torch_weights']


def __getattr__(name):
    # The converter is imported on first use, so that `python -m swinv2_jax.convert` does not find
    # its module already imported by the package (runpy's RuntimeWarning).
    if name in ('load_torch_weights', 'export_torch_weights'):
        from swinv2_jax import convert
        return getattr(convert, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
