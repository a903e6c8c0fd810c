r"""SimMIM pre-training of SwinV2-B at 192x192 / window 12: the official recipe.

  python train.py --workdir W --config configs/simmim_pretrain.py:base
  python train.py --workdir W --config configs/simmim_pretrain.py:base,runlocal    # seconds, tests

Official `configs/simmim/simmim_pretrain__swinv2_base__img192_window12__800ep.yaml` (+ the repo's
defaults): SwinV2-B (C=128, depths 2-2-18-2), 192x192, window 12, drop path 0.1; mask patch 32,
model patch 4, mask ratio 0.6 (22 of 36 blocks); the target normalised over 47x47 windows;
RandomResizedCrop 192, scale (0.67, 1), ratio (3/4, 4/3), bilinear (torchvision's default),
horizontal flip, ImageNet mean/std, nothing else; 800 epochs, 10 warm-up from 5e-7, AdamW
lr 1e-4 per 512 images, weight decay 0.05, gradient clipping 5, a multistep schedule (x0.1 at
epoch 700). Global batch 2048 (the SimMIM paper's; the yaml leaves it to the launch: 128 per GPU).
For a shorter run, set --config.num_epochs and --config.optim.decay_epochs together.
Evaluation reports the reconstruction loss of the validation set under fixed masks.
Fine-tune the result with configs/simmim_finetune.py (init_from = this workdir).
"""
from configs import common
from swinv2_jax.train import config_lib

VARIANTS = {'base': 'swinv2_base_window12_192'}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()              # ImageNet-1K
    c.objective = 'simmim'
    c.simmim = config_lib.base_simmim()      # mask patch 32, ratio 0.6, norm target 47
    c.model = common.pick('simmim_pretrain', VARIANTS, arg.variant or 'base')
    c.model_overrides = dict(drop_path_rate=0.1)
    c.batch_size = 2048
    c.num_epochs = 800.0
    c.eval_every_steps = 625 * 20
    c.checkpoint_every_steps = 625 * 5       # official SAVE_FREQ 5 epochs

    common.augmentation_off(c.aug)           # random resized crops and flips only
    c.aug.crop_scale = (0.67, 1.0)
    c.aug.interpolation = 'bilinear'
    c.aug.label_smoothing = 0.0              # no labels
    c.aug.crop_pct = 0.875

    c.optim.lr = 1e-4                         # x 2048 / 512 = 4e-4
    c.optim.warmup_epochs = 10.0
    c.optim.schedule = 'multistep'
    c.optim.decay_epochs = (700.0,)          # x optim.decay_rate (0.1) from there on

    if arg.runlocal:
        config_lib.runlocal(c)
        c.simmim.mask_patch_size = 8          # a 4x4 block grid on 32x32 images
        c.simmim.norm_target_window = 9
        c.optim.decay_epochs = (1.0,)
    return c
