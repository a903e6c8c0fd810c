r"""SimMIM pre-training on the embedded digits (no network needed): the small SimMIM config.

  python train.py --workdir /tmp/mim --config configs/simmim_digits.py
  python train.py --workdir /tmp/ft --config configs/simmim_digits_finetune.py --config.init_from=/tmp/mim

The model of configs/digits.py (32x32, patch 4: an 8x8 token map; window 4; two stages, C=48),
wrapped by SimMIM: its total stride is 8, so the decoder is a 1x1 conv 96 -> 8*8*3 and a pixel
shuffle by 8. The official mask geometry scaled to the image: mask patch 8 (2x2 tokens) on a 4x4
grid, ratio 0.6 -> 10 of 16 blocks masked; the target normalised over 9x9 windows (the official
47 on 192 pixels, with the window again wider than a mask block). Digits' light augmentation
(small crops, no flip); AdamW 1e-3 at batch 64 with warm-up and cosine, weight decay 0.05, clip 5.
Evaluation: the reconstruction loss of the 300 held-out images under fixed masks.
"""
from configs import common
from swinv2_jax.train import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = common.digits(config_lib.base_config())
    c.objective = 'simmim'
    c.simmim = config_lib.base_simmim()
    c.simmim.mask_patch_size = 8
    c.simmim.norm_target_window = 9
    c.num_epochs = 100.0
    c.checkpoint_every_steps = 230
    c.aug.label_smoothing = 0.0       # no labels
    c.optim.lr = 1e-3 * 512 / 64      # per 512 images: 1e-3 at batch 64
    c.optim.warmup_epochs = 5.0
    if arg.runlocal:
        common.digits_runlocal(c)
        c.model_overrides.update(common.TINY_DIGITS_MODEL)
    return c
