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
