r"""UperNet on ADE20K (tfds `scene_parse150`, 150 classes): the paper's 640 / window-40 recipe, and
mmsegmentation's Swin V1 recipe at 512.

  python train.py --workdir W --config configs/ade20k_upernet.py:swinv2_base --config.init_from=CKPT
  python train.py --workdir W --config configs/ade20k_upernet.py:swin_base_v1 --config.init_from=swin_base.pth

`init_from` is a classification checkpoint (converted Orbax directory, PyTorch file or a training
run of this project): its weights go into the backbone (SwinV2's log-spaced CPB moves from the
pre-trained windows to 40 with nothing to resize; a V1 bias table is resized bicubically), the
decode and auxiliary heads are initialised.

SwinV2 (`swinv2_tiny`, `swinv2_base`, `swinv2_large`), the paper's appendix A2 "Fine-tuning on
ADE20K": 640x640 crops, window 40 (pretrained_window_sizes = the checkpoint's windows), AdamW with
weight decay 0.05, linear decay over 80K iterations at batch 32, 750 linear warm-up iterations,
mmsegmentation's augmentation (flip, rescale ratio 0.5-2.0, photometric distortion). What the
paper's text lost, taken from the official Swin segmentation recipe (Swin-Transformer-Semantic-
Segmentation, upernet_swin_*_512x512_160k_ade20k.py): learning rate 6e-5 (a batch-16 value,
kept as is at batch 32 as the paper keeps its schedule, not scaled), warm-up from 1e-6 of it,
no weight decay on norms and position bias tables (this project's optimizer rule), stochastic
depth 0.3, auxiliary FCN loss weight 0.4, crops re-drawn at cat_max_ratio 0.75. The layer-wise lr
decay 0.95 is the paper's ADE20K ablation setting (appendix A1). Evaluation: keep-ratio resize to
(2560, 640), sliding windows 640 / stride 426 (mmsegmentation's 640 configs).

Swin V1 (`swin_base_v1`), the official mmsegmentation recipe at 512: lr 6e-5, weight decay 0.01,
batch 16, 160K iterations, 1,500 warm-up iterations (ratio 1e-6), poly power 1, no layer decay,
stochastic depth 0.3, windows of the checkpoint (12 for the 384 ImageNet-22K Swin-B), test scale
(2048, 512), windows 512 / stride 341.
"""
from configs import common
from swinv2_jax.train import config_lib

# variant -> (backbone, its pre-training windows per stage, stochastic depth)
SWINV2 = {
    'swinv2_tiny': ('swinv2_tiny_window16_256', (16, 16, 16, 8)),
    'swinv2_base': ('swinv2_base_window12_192', (12, 12, 12, 6)),
    'swinv2_large': ('swinv2_large_window12_192', (12, 12, 12, 6)),
}
SWIN_V1 = {'swin_base_v1': 'swin_base_patch4_window12_384'}


def _common(c, *, num_classes=150):
    c.objective = 'segmentation'
    c.dataset = 'scene_parse150'
    c.eval_split = 'test'              # tfds' name for ADE20K's 2,000 validation images
    c.init_from_required = True
    c.seg = config_lib.base_seg()
    c.seg.num_classes = num_classes
    c.eval_every_steps = 8000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 50
    c.optim.schedule = 'linear'
    c.optim.min_lr = 0.0
    c.optim.clip_grad = 0.0            # mmsegmentation's Swin recipes do not clip


def _lr(c, lr: float, batch: int):
    """Learning rates in this project's per-512-images convention: `lr` at `batch`."""
    c.optim.lr = lr * 512 / batch
    c.optim.warmup_lr = c.optim.lr * 1e-6


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()
    variant = arg.variant or 'swinv2_base'
    _common(c)
    if variant in SWINV2:
        backbone, pretrained = SWINV2[variant]
        c.model = 'upernet_' + backbone
        c.model_overrides = dict(img_size=640, window_size=40, pretrained_window_sizes=pretrained,
                                 drop_path_rate=0.3)
        c.batch_size = 32
        c.eval_batch_size = 8
        c.num_train_steps = 80_000
        c.optim.warmup_steps = 750
        c.optim.weight_decay = 0.05
        c.optim.layer_decay = 0.95
        _lr(c, 6e-5, batch=c.batch_size)
        c.seg.scale = (2560, 640)
        c.seg.test_scale = (2560, 640)
        c.seg.stride = (426, 426)
    else:
        c.model = 'upernet_' + common.pick('ade20k_upernet', SWIN_V1, variant)
        c.model_overrides = dict(img_size=512, strict_img_size=False, drop_path_rate=0.3)
        c.batch_size = 16
        c.eval_batch_size = 8
        c.num_train_steps = 160_000
        c.optim.warmup_steps = 1500
        c.optim.weight_decay = 0.01
        c.optim.layer_decay = 1.0
        _lr(c, 6e-5, batch=c.batch_size)
    c.seg.eval_canvas = (max(c.seg.test_scale),) * 2
    c.seg.eval_label_canvas = (2560, 2560)   # original sizes up to this; a larger image is an error naming it
    if arg.runlocal:
        c.model_overrides.update(img_size=64, window_size=4, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                 head_channels=8, aux_channels=8)
        if variant in SWINV2:
            c.model_overrides.pretrained_window_sizes = (0, 0, 0, 0)
        c.init_from_required = False
        c.batch_size = c.eval_batch_size = 8
        c.num_train_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
        c.log_every_steps = 1
        c.optim.warmup_steps = 1
        c.seg.scale = c.seg.test_scale = (96, 64)
        c.seg.stride = (43, 43)
        c.seg.eval_canvas = (96, 96)
        c.seg.eval_label_canvas = (64, 64)
    return c
