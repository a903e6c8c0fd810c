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
from swinv2_jax.train import config_lib

DROP_PATH = {'tiny': 0.2, 'small': 0.3, 'base': 0.5}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    variant = arg.variant or 'tiny'
    if variant not in DROP_PATH:
        raise ValueError(f'imagenet1k_scratch: variant {variant!r}; choose one of {", ".join(DROP_PATH)}')
    c = config_lib.base_config()
    c.model = f'swinv2_{variant}_window8_256'
    c.model_overrides = dict(drop_path_rate=DROP_PATH[variant])
    c.dataset = 'imagenet2012'
    c.train_split = 'train'
    c.eval_split = 'validation'
    c.extra_evals = (('imagenet_v2', 'test'),)
    c.batch_size = 1024
    c.eval_batch_size = 1024
    c.num_epochs = 300.0
    c.eval_every_steps = 1251 * 5       # every ~5 epochs (1,251 steps per epoch at 1024)
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 100

    c.aug = config_lib.base_aug()       # A1: RandAugment, Mixup 0.8, CutMix 1.0, erasing 0.25, LS 0.1
    c.optim.lr = 5e-4                   # x 1024 / 512 = 1e-3
    c.optim.warmup_lr = 5e-7
    c.optim.min_lr = 5e-6
    c.optim.warmup_epochs = 20.0
    c.optim.weight_decay = 0.05
    c.optim.clip_grad = 5.0

    if arg.runlocal:
        config_lib.runlocal(c)
    return c
