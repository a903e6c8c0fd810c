"""Test-session setup shared by every test file.

Import order: in one process, loading transformers' PyTorch models after TensorFlow segfaults on
this platform (TensorFlow 2.x CPU wheel with torch 2.14; reproduced with `import tensorflow` then
creating a `Swinv2ForMaskedImageModeling`), while the reverse order works. pytest-xdist runs
several test files in one worker, so a file that feeds the TF input pipeline (test_data,
test_train) may run before one that builds a Hugging Face reference. Loading the transformers
modeling code here, first, makes the order of the files irrelevant.
"""
try:
    import torch  # noqa: F401
    from transformers import Swinv2Model  # noqa: F401  (loads transformers' torch modules)
except ImportError:  # the runtime-only install: the reference tests skip themselves
    pass


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
    """A persistent JAX compilation cache for one test module (`pytestmark =
    pytest.mark.usefixtures('compilation_cache')`): trainer tests build the same tiny model many
    times, and each build otherwise recompiles init/step/eval (seconds each on 2 cores)."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
            'jax_persistent_cache_min_entry_size_bytes')
    before = {k: getattr(jax.config, k) for k in keys}
    jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jax_cache')))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    cc.reset_cache()
    yield
    for k, v in before.items():
        jax.config.update(k, v)
    cc.reset_cache()
