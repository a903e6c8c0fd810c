"""What several recipes share: picking a variant, augmentation off, the embedded digits setup,
and the small `runlocal` versions of the recipes that tests run."""
from typing import Any, Mapping

import ml_collections

from swinv2_jax.train import config_lib

# This project's registered model for the 32x32 digits: two stages, window 4, C=48.
DIGITS_MODEL = 'swinv2_digits_window4_32'
# Its geometry, listed so that each key can be changed from the command line (train.py locks the
# config: `--config.model_overrides.KEY` needs KEY to exist); tests check it matches the registry.
DIGITS_MODEL_OVERRIDES = dict(img_size=32, patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                              window_size=4, drop_path_rate=0.1)
# The digits model shrunk further for the SimMIM runs of tests.
TINY_DIGITS_MODEL = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2))


def pick(config: str, table: Mapping[str, Any], key: str, what: str = 'variant') -> Any:
    """`table[key]`, or a ValueError naming the config and the valid keys (so a typo fails loudly)."""
    if key not in table:
        raise ValueError(f'{config}: {what} {key!r}; choose one of {", ".join(table)}')
    return table[key]


def augmentation_off(aug: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Crops (and flips, where `hflip`) only: no RandAugment, colour jitter, random erasing,
    Mixup or CutMix. Label smoothing is left to the recipe."""
    aug.randaugment.num_layers = 0
    aug.color_jitter = 0.0
    aug.random_erasing = 0.0
    aug.mixup = 0.0
    aug.cutmix = 0.0
    aug.mix_prob = 0.0
    return aug


def digits(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The embedded scikit-learn digits (no network): the digits model, its data and evaluation
    cadence, light augmentation (digits are not flip-invariant: small crops, no flip), and the
    optimizer's warm-up from 0 down to 1e-5. Recipes add their epochs, lr and label smoothing."""
    c.model = DIGITS_MODEL
    c.model_overrides = dict(DIGITS_MODEL_OVERRIDES)
    c.dataset = 'digits'
    c.eval_split = 'test'
    c.batch_size = 64                 # 1,497 training images: 23 steps per epoch
    c.eval_batch_size = 320           # 300 held-out images: one batch, divisible by 8 or 64 devices
    c.eval_every_steps = 230          # ~10 epochs
    c.keep_checkpoints = 2
    c.log_every_steps = 23            # once per epoch

    augmentation_off(c.aug)
    c.aug.crop_scale = (0.8, 1.0)
    c.aug.crop_ratio = (0.9, 1.1)
    c.aug.hflip = False
    c.aug.crop_pct = 1.0
    c.aug.mean = (0.5, 0.5, 0.5)
    c.aug.std = (0.5, 0.5, 0.5)

    c.optim.warmup_lr = 0.0
    c.optim.min_lr = 1e-5
    return c


def digits_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A digits recipe in seconds on a CPU: four steps of 16 images, evaluation and checkpoints
    included."""
    c.num_train_steps = 4
    c.eval_every_steps = 4
    c.checkpoint_every_steps = 2
    c.log_every_steps = 1
    c.batch_size = 16
    return c


def finetune_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config_lib.runlocal` for a fine-tuning recipe: windows that differ from the (tiny)
    pre-training's, and no required init_from (tests pass one themselves)."""
    config_lib.runlocal(c)
    c.model_overrides.pretrained_window_sizes = (2, 2)
    c.init_from_required = False
    return c
