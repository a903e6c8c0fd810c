r"""Digits classification fine-tuned from a configs/simmim_digits.py run (or from scratch, to compare).

  python train.py --workdir /tmp/ft --config configs/simmim_digits_finetune.py --config.init_from=/tmp/mim
  python train.py --workdir /tmp/sc --config configs/simmim_digits_finetune.py:scratch   # same budget

configs/digits.py (model, data, augmentation, lr 2e-3 at batch 64) with a short budget (10 epochs,
2 warm-up) where pre-training can show, and layer-wise lr decay 0.75 as the official SimMIM
fine-tune (optim.py's official layer ids: patch embedding lr x 0.75^5 for the 2+2 blocks).
`scratch`: no init_from, and no layer decay (it slows down layers that start from random).
"""
from configs import common, digits
from swinv2_jax.train import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    if arg.variant not in (None, 'scratch'):
        raise ValueError(f'simmim_digits_finetune: unknown variant {arg.variant!r}; the only one is scratch')
    scratch = arg.variant == 'scratch'
    c = digits.get_config('runlocal' if arg.runlocal else None)
    c.num_epochs = 10.0
    c.eval_every_steps = 115
    c.checkpoint_every_steps = 115
    c.optim.layer_decay = 1.0 if scratch else 0.75
    c.init_from_required = not scratch
    if arg.runlocal:
        c.init_from_required = False
        c.model_overrides.update(common.TINY_DIGITS_MODEL, window_size=2)
    return c
