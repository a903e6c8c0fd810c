"""mmsegmentation's ADE20K pipeline (`configs/_base_/datasets/ade20k.py`), in TensorFlow.

Train: `Resize(img_scale, ratio_range)` (keep ratio), `RandomCrop(crop_size, cat_max_ratio)`,
`RandomFlip(0.5)`, `PhotoMetricDistortion`, `Normalize`, `Pad(crop_size, pad_val=0, seg_pad_val=255)`.
Eval: `Resize(img_scale, keep_ratio=True)`, `Normalize`; the model runs on the resized image and its
logits go back to the original size (swinv2_jax/train/objectives/segmentation.py).

Every random choice is a stateless op keyed by an explicit seed (see transforms.py). Where this
differs from mmcv/OpenCV: images are resized with TensorFlow's bilinear kernel (half-pixel centres,
no antialiasing, rounded to uint8; OpenCV's INTER_LINEAR uses 11-bit fixed-point weights), masks with
OpenCV's nearest rule exactly (source floor(dst * in / out)); the saturation and hue steps use
TensorFlow's float HSV (OpenCV quantises H to 0..179 and S to 0..255 in uint8).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from swinv2_jax.data import transforms

MMSEG_ATTEMPTS = 10   # RandomCrop: crops re-drawn while one class covers >= cat_max_ratio


def _u(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def rescale_size(height, width, scale: Sequence[float]):
    """mmcv's keep-ratio rescale: the largest size with long side <= max(scale) and short side
    <= min(scale), each side int(side * factor + 0.5)."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    long_max, short_max = tf.reduce_max(scale), tf.reduce_min(scale)
    factor = tf.minimum(long_max / tf.maximum(h, w), short_max / tf.minimum(h, w))
    return (tf.cast(tf.floor(h * factor + 0.5), tf.int32), tf.cast(tf.floor(w * factor + 0.5), tf.int32))


def resize_image(image: tf.Tensor, height, width) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [height, width, 3], bilinear (half-pixel centres, no antialiasing)."""
    out = tf.image.resize(image, tf.stack([height, width]), method='bilinear', antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def resize_mask(mask: tf.Tensor, height, width) -> tf.Tensor:
    """[H, W] -> [height, width], OpenCV's INTER_NEAREST (source index floor(dst * in / out))."""
    def taps(n_in, n_out):
        ratio = tf.cast(n_in, tf.float64) / tf.cast(n_out, tf.float64)
        src = tf.cast(tf.floor(tf.cast(tf.range(n_out), tf.float64) * ratio), tf.int32)
        return tf.minimum(src, n_in - 1)
    shape = tf.shape(mask)
    return tf.gather(tf.gather(mask, taps(shape[0], height), axis=0), taps(shape[1], width), axis=1)


def _crop_offsets(seed, height, width, crop: Sequence[int]):
    """mmseg RandomCrop.get_crop_bbox: offsets uniform in [0, margin] per axis."""
    s_y, s_x = transforms.split_seed(seed, 2)
    margin_h, margin_w = tf.maximum(height - crop[0], 0), tf.maximum(width - crop[1], 0)
    oy = tf.cast(tf.floor(_u(s_y) * tf.cast(margin_h + 1, tf.float32)), tf.int32)
    ox = tf.cast(tf.floor(_u(s_x) * tf.cast(margin_w + 1, tf.float32)), tf.int32)
    return tf.minimum(oy, margin_h), tf.minimum(ox, margin_w)


def _crop(x, oy, ox, crop):
    shape = tf.shape(x)
    return x[oy:oy + tf.minimum(crop[0], shape[0]), ox:ox + tf.minimum(crop[1], shape[1])]


def _spread_enough(label, cat_max_ratio: float, ignore_index: int):
    """mmseg's test: more than one class in the crop, and none covering cat_max_ratio of it."""
    values = tf.reshape(label, [-1])
    values = tf.boolean_mask(values, values != ignore_index)
    counts = tf.math.bincount(values, minlength=1, dtype=tf.int32)
    total = tf.reduce_sum(counts)
    many = tf.math.count_nonzero(counts) > 1
    ratio = tf.cast(tf.reduce_max(counts), tf.float32) / tf.cast(tf.maximum(total, 1), tf.float32)
    return tf.logical_and(many, ratio < cat_max_ratio)


def random_crop(image, label, seed, crop: Sequence[int], cat_max_ratio: float, ignore_index: int):
    """mmseg RandomCrop: a crop of `crop` (or the whole side where smaller); with cat_max_ratio < 1
    the first of up to 10 crops that passes `_spread_enough`, else the 11th drawn (as mmseg)."""
    shape = tf.shape(label)
    seeds = transforms.split_seed(seed, MMSEG_ATTEMPTS + 1)
    offsets = [_crop_offsets(s, shape[0], shape[1], crop) for s in seeds]
    oy, ox = offsets[0]
    if cat_max_ratio < 1.0:
        ok = tf.stack([_spread_enough(_crop(label, y, x, crop), cat_max_ratio, ignore_index)
                       for y, x in offsets[:MMSEG_ATTEMPTS]] + [tf.constant(True)])
        pick = tf.argmax(tf.cast(ok, tf.int32))  # the first True (the last entry always is)
        oy = tf.gather(tf.stack([y for y, _ in offsets]), pick)
        ox = tf.gather(tf.stack([x for _, x in offsets]), pick)
    return _crop(image, oy, ox, crop), _crop(label, oy, ox, crop)


def _convert(x, alpha=1.0, beta=0.0):
    """mmseg's `convert`: x * alpha + beta clipped to [0, 255], truncated to integers (astype uint8)."""
    return tf.floor(tf.clip_by_value(x * alpha + beta, 0.0, 255.0))


def photometric_distortion(image: tf.Tensor, seed, brightness_delta: float = 32.0,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                           hue_delta: int = 18) -> tf.Tensor:
    """mmseg PhotoMetricDistortion on uint8 [H, W, 3]: random brightness, contrast (before or after
    the colour steps, at random), saturation and hue, each applied with probability 0.5."""
    s = transforms.split_seed(seed, 10)
    x = tf.cast(image, tf.float32)
    x = tf.where(_u(s[0]) < 0.5, _convert(x, beta=_u(s[1], -brightness_delta, brightness_delta)), x)
    contrast_first = _u(s[2]) < 0.5          # mmseg: mode = randint(2); mode 1 = contrast first
    apply_contrast = _u(s[3]) < 0.5
    alpha = _u(s[4], *contrast_range)

    def contrast(x):
        return tf.where(apply_contrast, _convert(x, alpha=alpha), x)
    x = tf.where(contrast_first, contrast(x), x)
    hsv = tf.image.rgb_to_hsv(x / 255.0)
    sat = _convert(hsv[..., 1] * 255.0, alpha=_u(s[6], *saturation_range)) / 255.0
    sat = tf.where(_u(s[5]) < 0.5, sat, hsv[..., 1])
    shift = tf.floor(_u(s[8], -hue_delta, hue_delta)) / 180.0     # randint(-18, 18), OpenCV hue units
    hue = tf.where(_u(s[7]) < 0.5, tf.math.floormod(hsv[..., 0] + shift, 1.0), hsv[..., 0])
    x = tf.floor(tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([hue, sat, hsv[..., 2]], -1)) * 255.0 + 1e-3,
                                  0.0, 255.0))
    x = tf.where(contrast_first, x, contrast(x))
    return tf.cast(x, tf.uint8)


def pad_to(x: tf.Tensor, size: Sequence[int], value, what: str = '', key=None) -> tf.Tensor:
    """Pads [H, W, ...] at the bottom and right to `size` with `value` (mmseg's Pad); an input
    larger than `size` is an error naming `key` and `what` to raise."""
    shape = tf.shape(x)
    if key is not None:
        check = tf.debugging.Assert(tf.logical_and(shape[0] <= size[0], shape[1] <= size[1]),
                                    [key, 'is', shape[0], 'x', shape[1], f'pixels, larger than the {size[0]}x'
                                     f'{size[1]} of {what}: raise it'], summarize=3)
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    pads = [[0, size[0] - shape[0]], [0, size[1] - shape[1]]] + [[0, 0]] * (len(x.shape) - 2)
    out = tf.pad(x, pads, constant_values=tf.cast(value, x.dtype))
    out.set_shape([size[0], size[1], *x.shape[2:]])
    return out


def train_transform(image, label, seed, *, crop: Sequence[int], scale: Sequence[float], ratio_range,
                    cat_max_ratio: float, hflip: bool, photometric: bool, mean, std, ignore_index: int):
    """(normalised float32 [crop, 3], int32 label [crop]) of one decoded example (uint8, int32)."""
    s_scale, s_crop, s_flip, s_photo = transforms.split_seed(seed, 4)
    r = _u(s_scale, float(ratio_range[0]), float(ratio_range[1]))
    shape = tf.shape(label)
    h, w = rescale_size(shape[0], shape[1], tf.constant(scale, tf.float32) * r)
    image, label = resize_image(image, h, w), resize_mask(label, h, w)
    image, label = random_crop(image, label, s_crop, crop, cat_max_ratio, ignore_index)
    if hflip:
        flip = _u(s_flip) < 0.5
        image = tf.where(flip, image[:, ::-1], image)
        label = tf.where(flip, label[:, ::-1], label)
    if photometric:
        image = photometric_distortion(image, s_photo)
    image = transforms.normalize(image, mean, std)
    # an image smaller than the crop (after rescaling) is padded, as mmseg: image 0, label ignored
    return pad_to(image, crop, 0.0), pad_to(label, crop, ignore_index)


def eval_transform(image, label, key, *, scale: Sequence[float], canvas: Sequence[int],
                   label_canvas: Sequence[int], mean, std, ignore_index: int) -> dict:
    """The resized, normalised image padded to `canvas`, its size, and the label at the original
    size padded to `label_canvas` with the ignore index."""
    shape = tf.shape(label)
    h, w = rescale_size(shape[0], shape[1], tf.constant(scale, tf.float32))
    image = transforms.normalize(resize_image(image, h, w), mean, std)
    return {'image': pad_to(image, canvas, 0.0, 'seg.eval_canvas', key),
            'size': tf.stack([h, w]), 'orig_size': shape[:2],
            'label': pad_to(label, label_canvas, ignore_index, 'seg.eval_label_canvas (the original '
                            'sizes the evaluation holds)', key)}


__all__ = ['eval_transform', 'pad_to', 'photometric_distortion', 'random_crop', 'rescale_size', 'resize_image',
           'resize_mask', 'train_transform']
