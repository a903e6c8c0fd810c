r"""The embedded default: a small SwinV2 on scikit-learn's handwritten digits (no network needed).

  python train.py --workdir /tmp/w                       # this config
  python train.py --workdir /tmp/w --config configs/digits.py:runlocal

1,497 training and 300 held-out images of 32x32 (the 8x8 digits upscaled; see
swinv2_jax/data/digits.py). Model: `swinv2_digits_window4_32`, SwinV2 at 32x32 with 4x4 patches
(an 8x8 token map), window 4, two stages (8x8 then 4x4 tokens), C=48: ~0.3M parameters, a few
minutes on two CPU cores. Augmentation is light: digits are not flip-invariant (no hflip), small
crops only, no RandAugment, Mixup, CutMix or erasing; label smoothing 0.1 (the base value).
"""
from configs import common
from swinv2_jax.train import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = common.digits(config_lib.base_config())
    c.num_epochs = 40.0
    c.checkpoint_every_steps = 100
    c.optim.lr = 2e-3 * 512 / 64      # per 512 images: 2e-3 at batch 64
    c.optim.warmup_epochs = 2.0
    if arg.runlocal:
        common.digits_runlocal(c)
    return c
