"""swinv2-jax: Swin Transformer V2 in JAX/Flax with exact parity to the PyTorch implementations."""
from swinv2_jax.models import (SwinTransformerV2, create_model, list_models, model_fields,
                               model_from_fields)
from swinv2_jax.convert import export_torch_weights, load_torch_weights

__version__ = '0.1.0'
