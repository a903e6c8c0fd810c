r"""Fine-tuning SwinV2-B on ImageNet-1K from a SimMIM pre-training: the official recipe.

  python train.py --workdir W --config configs/simmim_finetune.py:base \
      --config.init_from=PRETRAIN_WORKDIR      # a configs/simmim_pretrain.py run, or an official
                                               # SimMIM / Hugging Face checkpoint file

Official `configs/simmim/simmim_finetune__swinv2_base__img224_window14__800ep.yaml` (+ defaults):
224x224 with window 14 (the last stage's 7x7 map clips it to 7), pretrained windows
(12, 12, 12, 6) of the 192 / window-12 pre-training (the continuous position bias takes the new
windows: nothing is resized); drop path 0.1; 100 epochs, 20 warm-up from 2.5e-7, AdamW lr 1.25e-3
per 512 images, min lr 2.5e-7, cosine, weight decay 0.05, gradient clipping 5, layer-wise lr decay
0.75 (official get_swin_layer ids, swinv2_jax/train/optim.py); the default timm augmentation
(RandAugment m9-mstd0.5, Mixup 0.8, CutMix 1.0, erasing 0.25, label smoothing 0.1), eval crop
224/256. Global batch 2048 (SimMIM paper; the yaml leaves it to the launch).
The encoder is taken from the source, its mask token and decoder are left out (logged), the
classifier is new.
"""
from configs import common
from swinv2_jax.train import config_lib

VARIANTS = {'base': 'swinv2_base_window12to16_192to256'}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()              # ImageNet-1K, the default timm (A1) augmentation
    c.model = common.pick('simmim_finetune', VARIANTS, arg.variant or 'base')
    c.model_overrides = dict(img_size=224, window_size=14, pretrained_window_sizes=(12, 12, 12, 6),
                             drop_path_rate=0.1)
    c.batch_size = 2048
    c.num_epochs = 100.0
    c.eval_every_steps = 625 * 5
    c.checkpoint_every_steps = 625 * 5
    c.init_from_required = True

    c.aug.crop_pct = 0.875
    c.optim.lr = 1.25e-3                      # x 2048 / 512 = 5e-3
    c.optim.warmup_lr = 2.5e-7
    c.optim.min_lr = 2.5e-7
    c.optim.layer_decay = 0.75

    if arg.runlocal:
        common.finetune_runlocal(c)
    return c
