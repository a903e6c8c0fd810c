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
from swinv2_jax.train import config_lib



def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()
    c.objective = 'simmim'
    c.simmim = config_lib.base_simmim()
    c.simmim.mask_patch_size = 8
    c.simmim.mask_ratio = 0.6
    c.simmim.norm_target_window = 9
    c.model = 'swinv2_tiny_window8_256'
    c.model_overrides = dict(img_size=32, patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                             window_size=4, drop_path_rate=0.1)
    c.dataset = 'digits'
    c.train_split = 'train'
    c.eval_split = 'test'
    c.extra_evals = ()
    c.batch_size = 64
    c.eval_batch_size = 320
    c.num_epochs = 100.0
    c.eval_every_steps = 230          # ~10 epochs of 23 steps
    c.checkpoint_every_steps = 230
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
    c.aug.label_smoothing = 0.0
    c.aug.crop_pct = 1.0
    c.aug.mean = (0.5, 0.5, 0.5)
    c.aug.std = (0.5, 0.5, 0.5)

    c.optim.lr = 1e-3 * 512 / 64      # per 512 images: 1e-3 at batch 64
    c.optim.warmup_lr = 0.0
    c.optim.min_lr = 1e-5
    c.optim.warmup_epochs = 5.0
    c.optim.weight_decay = 0.05
    c.optim.clip_grad = 5.0

    if arg.runlocal:
        c.model_overrides.update(dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2)))
        c.num_train_steps = 4
        c.eval_every_steps = 4
        c.checkpoint_every_steps = 2
        c.log_every_steps = 1
        c.batch_size = 16
        c.eval_batch_size = 320
    return c
