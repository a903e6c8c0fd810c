"""SimMIM PyTorch weights' older home, kept so that `from swinv2_jax.convert_simmim import ...` keeps
working; the code lives in `swinv2_jax.weights.simmim`."""
from swinv2_jax.weights.simmim import DECODER_NAMES, export_simmim_weights, load_simmim_weights, simmim_names

__all__ = ['DECODER_NAMES', 'export_simmim_weights', 'load_simmim_weights', 'simmim_names']
