"""`load_torch_weights` / `export_torch_weights` for every model of this project: each model family
is a row of `FAMILIES` (its class and the module with its PyTorch layouts)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from swinv2_jax.models import SwinTransformerV2
from swinv2_jax.models.upernet import UperNet
from swinv2_jax.weights import torch_layouts, upernet

# model class -> the module whose load_torch_weights / export_torch_weights handle it
FAMILIES = ((UperNet, upernet), (SwinTransformerV2, torch_layouts))


def _family(model):
    for cls, module in FAMILIES:
        if isinstance(model, cls):
            return module
    raise TypeError(f'no PyTorch layouts for a {type(model).__name__}; models with layouts: '
                    f'{", ".join(c.__name__ for c, _ in FAMILIES)}')


def load_torch_weights(src, model, layout: Optional[str] = None) -> Dict[str, Any]:
    """Variables for `model` from a PyTorch state dict (a path or a mapping). A SwinTransformerV2
    reads the official, SimMIM, timm and Hugging Face layouts (`torch_layouts.load_torch_weights`);
    a UperNet Hugging Face's `UperNetForSemanticSegmentation` and mmsegmentation's
    (`weights.upernet.load_torch_weights`, its variables with `batch_stats`). The layout is
    detected when None."""
    return _family(model).load_torch_weights(src, model, layout)


def export_torch_weights(variables: Mapping[str, Any], model, layout: Optional[str] = None) -> Dict[str, np.ndarray]:
    """A PyTorch state dict of `variables` for `model` in `layout` (default: 'timm' for a
    SwinTransformerV2, 'hf' for a UperNet; see the family's `export_torch_weights`)."""
    module = _family(model)
    return module.export_torch_weights(variables, model) if layout is None else \
        module.export_torch_weights(variables, model, layout)
