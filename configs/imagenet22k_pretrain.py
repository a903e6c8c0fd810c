r"""SwinV2-B/L ImageNet-22K pre-training: the paper's appendix A2 recipe (192x192, window 12).

  python train.py --workdir W --config configs/imagenet22k_pretrain.py:base   # or large

AdamW for 90 epochs, cosine with 5 warm-up epochs, batch 4096, lr 1e-3 (optim.lr is per 512
images: 1.25e-4 -> 1e-3 at 4096, the official 22K configs), weight decay 0.1, gradient clipping
5.0, RandAugment, Mixup, CutMix, random erasing, stochastic depth 0.2.

`dataset = 'imagenet22k'` is a placeholder name: TFDS has no ImageNet-22K builder. Provide one
(a manual-download tfds builder registered under that name, or a class-per-folder tree with
`--config.dataset=folder:/path` holding train/ and val/) and a held-out split for `eval_split`.
"""
from configs import common
from swinv2_jax.train import config_lib

MODELS = {'base': 'swinv2_base_window12_192', 'large': 'swinv2_large_window12_192'}


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()        # A1's augmentation
    c.model = common.pick('imagenet22k_pretrain', MODELS, arg.variant or 'base')
    c.model_overrides = dict(drop_path_rate=0.2)      # num_classes from the dataset (21,841)
    c.dataset = 'imagenet22k'
    c.batch_size = 4096
    c.eval_batch_size = 4096
    c.num_epochs = 90.0
    c.eval_every_steps = 10000
    c.checkpoint_every_steps = 2000

    c.optim.lr = 1.25e-4                # x 4096 / 512 = 1e-3
    c.optim.warmup_lr = 1.25e-7
    c.optim.min_lr = 1.25e-6
    c.optim.warmup_epochs = 5.0
    c.optim.weight_decay = 0.1

    if arg.runlocal:
        config_lib.runlocal(c)
        c.dataset = 'imagenet2012'      # a tfds name that tfds.testing.mock_data can stand in for
    return c
