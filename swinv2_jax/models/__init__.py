"""SwinV2 model code: jax, flax and numpy only (no TensorFlow, no torch)."""
from swinv2_jax.models.registry import (ABLATIONS, ALIASES, HEADS, SEGMENTATION_ALIASES, VARIANTS, create_model,
                                        create_segmentation_model, list_models, list_segmentation_models,
                                        model_config, model_fields, model_from_fields, resolve_name)
from swinv2_jax.models.upernet import UperNet
from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2, abstract_variables

