"""The converter's older home, kept so that `python -m swinv2_jax.convert ...` and
`from swinv2_jax.convert import load_torch_weights, ...` keep working.

The code lives in `swinv2_jax.weights`: `torch_layouts` (PyTorch names and layouts in and out),
`pytorch` (load/export for every model family, the package's exports) and `cli` (this command line).
"""
from swinv2_jax.weights.cli import main
from swinv2_jax.weights.pytorch import export_torch_weights, load_torch_weights
from swinv2_jax.weights.torch_layouts import (EXPORT_LAYOUTS, HF_PREFIXES, IGNORED_BUFFERS, LAYOUTS, NAME_RULES,
                                              detect_layout, hf_prefix, read_state_dict, resolve_layout,
                                              torch_names)

__all__ = ['EXPORT_LAYOUTS', 'HF_PREFIXES', 'IGNORED_BUFFERS', 'LAYOUTS', 'NAME_RULES', 'detect_layout',
           'export_torch_weights', 'hf_prefix', 'load_torch_weights', 'main', 'read_state_dict',
           'resolve_layout', 'torch_names']

if __name__ == '__main__':
    import sys
    sys.exit(main())
