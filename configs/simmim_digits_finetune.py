r"""Digits classification fine-tuned from a configs/simmim_digits.py run (or from scratch, to compare).

  python train.py --workdir /tmp/ft --config configs/simmim_digits_finetune.py --config.init_from=/tmp/mim
  python train.py --workdir /tmp/sc --config configs/simmim_digits_finetune.py:scratch   # same budget

configs/digits.py (model, data, augmentation, lr 2e-3 at batch 64) with a short budget (10 epochs,
2 warm-up) where pre-training can show, and layer-wise lr decay 0.75 as the official SimMIM
fine-tune (optim.py's official layer ids: patch embedding lr x 0.75^5 for the 2+2 blocks).
`scratch`: no init_from, and no layer decay (it slows down layers that start from random).
"""
import importlib.util
import os

from swinv2_jax.train import config_lib


def _digits_config(arg):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'digits.py')
    spec = importlib.util.spec_from_file_location('digits_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    if arg.variant not in (None, 'scratch'):
        raise ValueError(f'simmim_digits_finetune: unknown variant {arg.variant!r}; the only one is scratch')
    scratch = arg.variant == 'scratch'
    c = _digits_config('runlocal' if arg.runlocal else None)
    c.num_epochs = 10.0
    c.eval_every_steps = 115
    c.checkpoint_every_steps = 115
    c.optim.warmup_epochs = 2.0
    c.optim.layer_decay = 0.75
    c.init_from_required = not scratch
    if scratch:
        c.optim.layer_decay = 1.0
    if arg.runlocal:
        c.init_from_required = False
        c.model_overrides.update(dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=2))
    return c
