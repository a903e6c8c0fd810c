r"""The embedded default: a small SwinV2 on scikit-learn's handwritten digits (no network needed).

  python train.py --workdir /tmp/w                       # this config
  python train.py --workdir /tmp/w --config configs/digits.py:runlocal

1,497 training and 300 held-out images of 32x32 (the 8x8 digits upscaled; see
swinv2_jax/data/digits.py). Model: SwinV2 at 32x32 with 4x4 patches (an 8x8 token map), window 4,
two stages (8x8 then 4x4 tokens), C=48: ~0.3M parameters, a few minutes on two CPU cores.
Augmentation is light: digits are not flip-invariant (no hflip), small crops only, no
RandAugment, Mixup, CutMix or erasing; label smoothing 0.1.
"""
from swinv2_jax.train import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()
    c.model = 'swinv2_tiny_window8_256'
    c.model_overrides = dict(img_size=32, patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                             window_size=4, drop_path_rate=0.1)
    c.dataset = 'digits'
    c.train_split = 'train'
    c.eval_split = 'test'
    c.extra_evals = ()
    c.batch_size = 64
    c.eval_batch_size = 320          # 300 held-out images: one batch, divisible by 8 or 64 devices
    c.num_epochs = 40.0
    c.eval_every_steps = 230          # ~10 epochs of 23 steps
    c.checkpoint_every_steps = 100
    c.keep_checkpoints = 2
    c.log_every_steps = 23

    c.aug.crop_scale = (0.8, 1.0)
    c.aug.crop_ratio = (0.9, 1.1)
    c.aug.hflip = False
    c.aug.randaugment.num_layers = 0
    c.aug.color_jitter = 0.0
    c.aug.random_erasing = 0.0
    c.aug.mixup = 0.0
    c.aug.cutmix = 0.0
    c.aug.mix_prob = 0.0
    c.aug.label_smoothing = 0.1
    c.aug.crop_pct = 1.0
    c.aug.mean = (0.5, 0.5, 0.5)
    c.aug.std = (0.5, 0.5, 0.5)

    c.optim.lr = 2e-3 * 512 / 64      # per 512 images: 2e-3 at batch 64
    c.optim.warmup_lr = 0.0
    c.optim.min_lr = 1e-5
    c.optim.warmup_epochs = 2.0
    c.optim.weight_decay = 0.05
    c.optim.clip_grad = 5.0

    if arg.runlocal:
        c.num_train_steps = 4
        c.eval_every_steps = 4
        c.checkpoint_every_steps = 2
        c.log_every_steps = 1
        c.batch_size = 16
    return c
