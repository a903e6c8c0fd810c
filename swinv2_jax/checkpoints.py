"""The converted-checkpoint format's older home, kept so that `swinv2_jax.checkpoints.load_converted`
and friends keep working; the code lives in `swinv2_jax.weights.converted` (not to be confused with
`swinv2_jax.train.checkpointing`, the training state)."""
from swinv2_jax.weights.converted import (CONFIG_FILE, FORMAT, VARIABLES_DIR, load_converted, read_config,
                                          save_converted)

__all__ = ['CONFIG_FILE', 'FORMAT', 'VARIABLES_DIR', 'load_converted', 'read_config', 'save_converted']
