r"""The embedded segmentation default: UperNet on a small SwinV2, on scenes of scikit-learn digits.

  python train.py --workdir /tmp/seg --config configs/digits_segmentation.py
  python train.py --workdir /tmp/seg --config configs/digits_segmentation.py:runlocal   # tests

Data: `digits_scenes` (swinv2_jax/data/digits_scenes.py): 64x64 scenes of three 32x32 digits,
11 classes (background + 10 digits), 2,000 training and 300 held-out scenes built from disjoint
digit images. Model: `upernet_swinv2_digits_window4_32` at 64x64 with four stages (patch 4: 16, 8,
4, 2 tokens a side; the last stage's window is its whole 2x2 map), C=32, head 64 channels,
auxiliary head 32. mmseg's pipeline scaled to the scenes: rescale of (64, 64) by 0.75-1.5, 64 crop
with cat_max_ratio 0.75, photometric distortion, no flip (digits are not mirror-invariant);
AdamW 2e-3 at batch 16 with the recipes' linear decay, 100 warm-up steps. Evaluation: mIoU over
the 300 held-out scenes, whole-image (the canvas is the crop).
"""
from configs import common
from swinv2_jax.train import config_lib

MODEL_OVERRIDES = dict(img_size=64, patch_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                       window_size=4, drop_path_rate=0.1, head_channels=64, aux_channels=32)


def get_config(arg=None):
    arg = config_lib.parse_arg(arg)
    c = config_lib.base_config()
    c.objective = 'segmentation'
    c.model = 'upernet_' + common.DIGITS_MODEL
    c.model_overrides = dict(MODEL_OVERRIDES)
    c.dataset = 'digits_scenes'
    c.eval_split = 'test'
    c.batch_size = 16
    c.eval_batch_size = 32            # 300 scenes: 10 batches (the last padded), divisible by 8 devices
    c.num_train_steps = 1000
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.log_every_steps = 50
    c.seg = config_lib.base_seg()
    c.seg.scale = (64, 64)
    c.seg.ratio_range = (0.75, 1.5)
    c.seg.hflip = False
    c.seg.test_scale = (64, 64)
    c.seg.test_mode = 'whole'
    c.optim.schedule = 'linear'
    c.optim.lr = 2e-3 * 512 / 16      # per 512 images: 2e-3 at batch 16
    c.optim.warmup_lr = 0.0
    c.optim.min_lr = 0.0
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.01
    if arg.runlocal:
        c.model_overrides.update(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), head_channels=8,
                                 aux_channels=8)
        config_lib.runlocal_schedule(c)
        c.seg.test_mode = 'slide'
        c.seg.stride = (43, 43)
        c.seg.eval_canvas = (96, 96)   # slide: 2x2 windows over a canvas larger than the crop
    return c
