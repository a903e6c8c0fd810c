r"""SwinV2-B/L ImageNet-22K -> ImageNet-1K fine-tuning: the paper's appendix A2 recipe.

  python train.py --workdir W --config configs/imagenet1k_finetune.py:base_256 \
      --config.init_from=/ckpt/swinv2_base_22k          # converted dir, .pth, or a training run

ARG: base_256, base_384, large_256, large_384. 256x256 with window 16 and 384x384 with window 24,
pretrained windows (12, 12, 12, 6) of the 192x192 / window-12 pre-training (the continuous position
bias takes the new windows; nothing is resized). 30 epochs, 5 warm-up, batch 1024, lr 4e-5 (paper;
optim.lr per 512 = 2e-5 as the official *_22kto1k_ft configs, with warmup_lr 2e-8 and min_lr 2e-7),
weight decay 1e-8, gradient clipping 5.0, stochastic depth 0.2, the A1 augmentation ("the same data
augmentation and regularizations as the first stage").

Inferred, not in the paper: layer-wise lr decay 0.9. The paper names no layer decay for this
fine-tune, and the official 22kto1k_ft configs leave TRAIN.LAYER_DECAY at its default 1.0 (off);
0.9 follows the official fine-tune recipes that use it (SimMIM/SwinV2 fine-tuning in the same
repository, get_swin_layer). Set --config.optim.layer_decay=1.0 for the official behaviour.
The official code initialises the 1K head from the 22K head's ImageNet-1K rows (map22kto1k.txt);
pass that file as --config.init_head_map to do the same, else the head is re-initialised.
"""
from configs import common
from swinv2_jax.train import config_lib

VARIANTS = {                            # (model, eval crop_pct)
    'base_256': ('swinv2_base_window12to16_192to256', 0.9),
    'base_384': ('swinv2_base_window12to24_192to384', 1.0),
    'large_256': ('swinv2_large_window12to16_192to256', 0.9),
    'large_384': ('swinv2_large_window12to24_192to384', 1.0),
}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    model, crop_pct = common.pick('imagenet1k_finetune', VARIANTS, arg.variant or 'base_256')
    c = config_lib.base_config()        # A1's data, batch 1024 and augmentation
    c.model = model                     # window 16/24 at 256/384, pretrained_window_sizes (12,12,12,6)
    c.model_overrides = dict(drop_path_rate=0.2)
    c.extra_evals = (('imagenet_v2', 'test'),)
    c.num_epochs = 30.0
    c.eval_every_steps = 1251 * 2
    c.init_from_required = True

    c.aug.crop_pct = crop_pct           # 0.9 at 256, 1.0 at 384
    c.optim.lr = 2e-5                   # x 1024 / 512 = 4e-5
    c.optim.warmup_lr = 2e-8
    c.optim.min_lr = 2e-7
    c.optim.warmup_epochs = 5.0
    c.optim.weight_decay = 1e-8
    c.optim.layer_decay = 0.9           # inferred: see the docstring

    if arg.runlocal:
        common.finetune_runlocal(c)
    return c
