r"""SwinV2-T/S/B on ImageNet-1K from scratch: the paper's appendix A1 recipe (256x256, window 8).

  python train.py --workdir W --config configs/imagenet1k_scratch.py:tiny    # or small, base
  python train.py --workdir W --config configs/imagenet1k_scratch.py:tiny,runlocal   # tests

AdamW for 300 epochs, cosine with 20 warm-up epochs, batch 1024, lr 1e-3 (optim.lr is per 512
images, as the official configs: 5e-4 -> 1e-3 at 1024), weight decay 0.05, gradient clipping 5.0,
RandAugment (rand-m9-mstd0.5-inc1), Mixup 0.8, CutMix 1.0, random erasing 0.25, label smoothing
0.1, stochastic depth 0.2 / 0.3 / 0.5 for T / S / B. Evaluation on `imagenet2012` validation and
`imagenet_v2` (crop_pct 0.9; the official repo evaluates at 0.875 = 224/256).
ImageNet-1K needs the manual download placed for tfds (README: "ImageNet").
"""
from configs import common
from swinv2_jax.train import config_lib

DROP_PATH = {'tiny': 0.2, 'small': 0.3, 'base': 0.5}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    variant = arg.variant or 'tiny'
    drop_path = common.pick('imagenet1k_scratch', DROP_PATH, variant)
    c = config_lib.base_config()        # A1: its data, batch, 300 epochs, optimizer, augmentation
    c.model = f'swinv2_{variant}_window8_256'
    c.model_overrides = dict(drop_path_rate=drop_path)
    c.extra_evals = (('imagenet_v2', 'test'),)
    c.eval_every_steps = 1251 * 5       # every ~5 epochs (1,251 steps per epoch at 1024)
    if arg.runlocal:
        config_lib.runlocal(c)
    return c
