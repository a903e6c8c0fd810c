"""The training config: every key `train.py` reads, its default and its meaning, and the `ARG` parser.

This module is the one reference for config keys: `configs/*.py` start from `base_config()` and
change only what their recipe changes, so a key's meaning and default live here and nowhere else.
Any key can be changed from the command line (`--config.optim.lr=1e-3`); train.py locks the
config, so a misspelt key is an error. Nothing here imports TensorFlow: loading a config never
starts the input pipeline.
"""
from __future__ import annotations

from typing import Dict, Optional

import ml_collections
from ml_collections import config_dict

from swinv2_jax.constants import IMAGENET_MEAN, IMAGENET_STD


def parse_arg(arg: Optional[str], **defaults) -> ml_collections.ConfigDict:
    """`'tiny,runlocal,lr=1e-3'` -> ConfigDict(variant='tiny', runlocal=True, lr=1e-3).

    Bare words that are not flags (`runlocal`) are the variant; `key=value` pairs are parsed as
    Python literals where they can be. Unknown keys are errors, so that typos fail loudly.
    """
    import ast
    out = dict(variant=None, runlocal=False, **defaults)
    for part in (arg or '').split(','):
        part = part.strip()
        if not part:
            continue
        if '=' in part:
            key, value = part.split('=', 1)
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        elif part == 'runlocal':
            key, value = 'runlocal', True
        else:
            key, value = 'variant', part
        if key not in out:
            raise ValueError(f'unknown config argument {key!r} in {arg!r}; known: {", ".join(out)}')
        out[key] = value
    return ml_collections.ConfigDict(out)


def base_aug() -> ml_collections.ConfigDict:
    """`config.aug`: the paper's A1 augmentation (timm's `rand-m9-mstd0.5-inc1`, Mixup 0.8,
    CutMix 1.0, ...). Crops, flips, RandAugment and erasing run in the input pipeline; Mixup,
    CutMix and label smoothing on device in the train step."""
    return ml_collections.ConfigDict(dict(
        crop_scale=(0.08, 1.0),      # train: RandomResizedCrop area fraction
        crop_ratio=(3 / 4, 4 / 3),   # and aspect ratio range
        hflip=True,                  # random horizontal flip
        randaugment=dict(num_layers=2, magnitude=9, magnitude_std=0.5),  # num_layers=0 disables
        # strength of colour jitter (0 = off); timm (and so the official repo) ignores it when
        # RandAugment is on
        color_jitter=0.0,
        random_erasing=0.25,         # probability of erasing one random box per image
        mixup=0.8,                   # Mixup alpha (0 = off)
        cutmix=1.0,                  # CutMix alpha (0 = off)
        mix_prob=1.0,                # probability that a batch is mixed at all
        switch_prob=0.5,             # probability of CutMix rather than Mixup when both are on
        label_smoothing=0.1,
        crop_pct=0.9,                # eval: resize to size / crop_pct, center crop (1.0 at 384)
        interpolation='bicubic',     # resize method of the train crop and the eval resize
        mean=IMAGENET_MEAN,          # per channel, images scaled to 0..1
        std=IMAGENET_STD,
    ))


def base_optim() -> ml_collections.ConfigDict:
    """`config.optim`: AdamW as in the official repo. Learning rates are per 512 images: the run
    uses lr * effective_batch / 512 (effective_batch = batch_size * grad_accum_steps), for `lr`,
    `warmup_lr` and `min_lr` alike (official `main.py` linear scaling)."""
    return ml_collections.ConfigDict(dict(
        lr=5e-4,                   # peak, after the linear warm-up from warmup_lr
        warmup_lr=5e-7,
        min_lr=5e-6,               # the end of the cosine decay
        warmup_epochs=20.0,
        warmup_steps=-1,           # >= 0 overrides warmup_epochs (in optimizer updates)
        schedule='cosine',         # after warm-up: 'cosine' to min_lr, 'linear' (mmseg's poly, power 1), or 'multistep':
        decay_epochs=(),           #   lr * decay_rate ** (milestones in decay_epochs passed)
        decay_rate=0.1,
        weight_decay=0.05,         # decoupled (AdamW); not on biases, norms, logit scales, CPB MLPs
        betas=(0.9, 0.999),        # AdamW
        eps=1e-8,
        clip_grad=5.0,             # global norm; 0 = off
        layer_decay=1.0,           # layer-wise lr decay per block (1.0 = off)
        ema_decay=0.0,             # EMA of the weights (0 = off); evaluated as ema_eval_*
        grad_accum_steps=1,        # optax.MultiSteps: one update every k steps (batches)
    ))


def base_simmim() -> ml_collections.ConfigDict:
    """`config.simmim` of `objective='simmim'`: the official SimMIM V2 values."""
    return ml_collections.ConfigDict(dict(
        mask_patch_size=32,        # pixels per mask block side (a multiple of the model patch size)
        mask_ratio=0.6,            # fraction of blocks masked: ceil(count * ratio)
        norm_target_window=47,     # local normalisation of the target (0 = off)
    ))


def base_seg() -> ml_collections.ConfigDict:
    """`config.seg` of `objective='segmentation'`: mmsegmentation's ADE20K pipeline and UperNet loss
    (configs/_base_/datasets/ade20k.py); the crop (and sliding window) is the model's img_size."""
    return ml_collections.ConfigDict(dict(
        num_classes=0,             # 0: the dataset's (folder datasets need it)
        ignore_index=255,          # label of unlabelled pixels: no loss, not in the metrics
        reduce_zero_label=config_dict.placeholder(bool),  # None: the dataset's (True for scene_parse150)
        scale=(2048, 512),         # train: keep-ratio rescale to (long, short) max, times a ratio drawn in
        ratio_range=(0.5, 2.0),    #   this range
        cat_max_ratio=0.75,        # re-draw a crop (up to 10 times) while one class covers this fraction
        hflip=True,
        photometric=True,          # mmseg PhotoMetricDistortion
        aux_weight=0.4,            # loss weight of the auxiliary FCN head
        avg_non_ignore=False,      # False: the loss is a mean over all pixels (mmseg's default)
        test_scale=(2048, 512),    # eval: keep-ratio resize to (long, short) max
        test_mode='slide',         # 'slide': windows of the model's size every `stride`; 'whole'
        stride=(341, 341),         # mmseg's 512-crop recipes; the paper's 640: 426
        eval_canvas=(),            # fixed (H, W) the resized images are padded to; () = max(test_scale) square
        eval_label_canvas=(),      # fixed (H, W) >= every original size of the eval set; () = eval_canvas
    ))


def base_config() -> ml_collections.ConfigDict:
    """Every key the training loop reads, with its default: the ImageNet-1K from-scratch recipe
    (the paper's A1) for SwinV2-T. `objective='simmim'` also reads `config.simmim` (`base_simmim`),
    `objective='segmentation'` `config.seg` (`base_seg`)."""
    c = ml_collections.ConfigDict()
    # a row of the trainer's objective table: 'classification', 'simmim', 'segmentation' (reads c.seg)
    c.objective = 'classification'
    c.model = 'swinv2_tiny_window8_256'               # a create_model name (swinv2_jax.list_models())
    # create_model keyword overrides (drop_path_rate, img_size, window_size, pretrained_window_sizes,
    # ...); num_classes comes from the dataset unless given here
    c.model_overrides = ml_collections.ConfigDict()
    # a tfds name; 'digits': the embedded scikit-learn digits (a local tfds builder, no network);
    # 'folder:/path': tfds' ImageFolder over /path/<split>/<class>/<image>
    c.dataset = 'imagenet2012'
    c.data_dir = config_dict.placeholder(str)        # tfds data_dir (None: tfds' default)
    c.train_split = 'train'
    c.eval_split = 'validation'     # evaluated as 'eval_*' metrics; '' = none
    # folder datasets: unreadable image files (corrupt, empty, truncated) are an error listing them
    # before training starts; True skips them instead (their count and paths are logged)
    c.skip_bad_images = False
    c.extra_evals = ()              # ((dataset, split), ...), e.g. (('imagenet_v2', 'test'),)
    c.batch_size = 1024             # global, per step (split over processes and devices)
    c.eval_batch_size = 1024        # global
    c.shuffle_window = 8192         # train: consecutive examples permuted together (data/pipeline.py)
    c.num_epochs = 300.0
    c.num_train_steps = -1          # > 0 overrides num_epochs
    c.eval_every_steps = 5000       # and at the end; 0 = only at the end
    c.checkpoint_every_steps = 1000  # and at the end
    c.keep_checkpoints = 3          # the newest kept in the workdir
    c.log_every_steps = 100         # train metrics (metrics.jsonl, TensorBoard, console)
    c.init_from = ''                # converted Orbax dir, PyTorch file, or a training workdir
    c.init_from_required = False    # fine-tuning configs set it: a run without init_from is an error
    c.init_head_map = ''            # text file of source class indices (e.g. the official map22kto1k.txt)
    c.eval_only = False             # evaluate init_from (or the workdir's checkpoint) and stop
    c.seed = 0                      # parameters, data order, augmentation, dropout: all from it
    c.sharding = 'zero1'            # 'replicated', 'zero1' (opt state sharded), 'fsdp': train/sharding.py
    c.aug = base_aug()
    c.optim = base_optim()
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a recipe to seconds on a laptop CPU (tests; `tfds.testing.mock_data`): the same
    data pipeline and optimizer, a two-stage SwinV2 at 32x32, batch 8, two steps."""
    c.model_overrides.update(dict(img_size=32, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                                  pretrained_window_sizes=(0, 0), drop_path_rate=0.1))
    return runlocal_schedule(c)


def runlocal_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`runlocal`'s run length alone (batch 8, two steps, evaluation and a checkpoint at step 2), for
    recipes that shrink their model their own way."""
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 2
    c.eval_every_steps = 2
    c.checkpoint_every_steps = 2
    c.log_every_steps = 1
    c.optim.warmup_steps = 1
    return c


def as_overrides(c: ml_collections.ConfigDict) -> Dict:
    """`model_overrides` as plain create_model keyword arguments (lists -> tuples)."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return tuple(plain(x) for x in v)
        return v
    return {k: plain(v) for k, v in c.model_overrides.to_dict().items()}


def effective_batch(c: ml_collections.ConfigDict) -> int:
    return int(c.batch_size) * int(c.optim.grad_accum_steps)

