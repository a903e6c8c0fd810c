"""Image transforms of the SwinV2 recipe (paper appendix A1, timm semantics), in TensorFlow.

Every random choice is drawn from `tf.random.stateless_*` ops keyed by an explicit `seed` (a
[2] integer tensor), so an example's augmentation is a pure function of its key: the input pipeline
derives that key from (seed, epoch, example position), which is what makes resumption exact.

What follows timm (`create_transform(..., auto_augment='rand-m9-mstd0.5-inc1',
interpolation='bicubic', re_prob=0.25, re_mode='pixel')`) and where it differs:
- `random_resized_crop_window`: timm's RandomResizedCropAndInterpolation, 10 attempts then the
  central fallback. JPEG crops are decoded with `decode_and_crop_jpeg` (only the window is decoded).
- `resize`: bicubic (Keys, a = -0.5, as PIL) with antialiasing when shrinking, rounded to uint8 as
  PIL does.
- `eval_resize_crop`: timm's eval transform: shorter side to floor(size / crop_pct) (torchvision's
  rule for the longer side), then a centred crop.
- `rand_augment`: timm's increasing op set with its level functions, probability 0.5 per op,
  layers drawn with replacement, magnitude ~ N(m, std) clipped to [0, 10]. The pixel ops reproduce
  PIL's integer arithmetic (grey as PIL's 'L', truncating blends, Equalize and AutoContrast
  look-up tables, the SMOOTH kernel of Sharpness); the geometric ops use PIL's affine matrices,
  pixel-centre convention and hard fill edge with the mean colour, but interpolate bilinearly (TF's
  projective transform has no bicubic mode).
- `color_jitter`: torchvision ColorJitter(b, c, s) in random order (used only without RandAugment,
  as timm disables it when RandAugment is on).
- `random_erasing`: timm RandomErasing, 'pixel' mode (per-pixel N(0, 1)), one box, area
  [0.02, 1/3], log-uniform aspect [0.3, 1/0.3], on the normalised image.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf

# ----------------------------------------------------------------------------------------- seeds


def split_seed(seed, num: int) -> list[tf.Tensor]:
    """`num` independent [2] seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def fold_seed(seed, *data) -> tf.Tensor:
    """`seed` with the integers `data` folded in one after the other."""
    for value in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
    return seed


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


# ---------------------------------------------------------------------------- decoding, crops


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG / PNG / GIF / BMP bytes to uint8 [H, W, 3] (JPEG with libjpeg's accurate DCT, as PIL)."""
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def as_rgb(image: tf.Tensor) -> tf.Tensor:
    """An already decoded image as uint8 [H, W, 3] (grey repeated, alpha dropped)."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
        image = image[..., :3]
    return image


def random_resized_crop_window(seed, height, width, scale: Sequence[float],
                               ratio: Sequence[float], attempts: int = 10):
    """timm's RandomResizedCrop parameters: (top, left, crop_height, crop_width), int32 scalars.

    Up to `attempts` draws of an area fraction in `scale` and a log-uniform aspect ratio in
    `ratio`; the first that fits is placed uniformly, else the centred crop of the nearest allowed
    aspect ratio (timm's fallback). All attempts are drawn at once, which changes nothing: later
    attempts are only read when the earlier ones failed.
    """
    s_area, s_ratio, s_offset = split_seed(seed, 3)
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    target_area = _uniform(s_area, [attempts], scale[0], scale[1]) * height_f * width_f
    aspect = tf.exp(_uniform(s_ratio, [attempts], math.log(ratio[0]), math.log(ratio[1])))
    crop_w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (crop_w <= width) & (crop_h <= height) & (crop_w > 0) & (crop_h > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)

    in_ratio = width_f / height_f
    lo_ratio, hi_ratio = min(ratio), max(ratio)
    fallback_w = tf.where(in_ratio > hi_ratio, tf.cast(tf.round(height_f * hi_ratio), tf.int32), width)
    fallback_h = tf.where(in_ratio < lo_ratio, tf.cast(tf.round(width_f / lo_ratio), tf.int32), height)

    crop_h = tf.where(found, crop_h[first], fallback_h)
    crop_w = tf.where(found, crop_w[first], fallback_w)
    u = _uniform(s_offset, [2])
    top = tf.where(found, tf.cast(tf.floor(u[0] * tf.cast(height - crop_h + 1, tf.float32)), tf.int32),
                   (height - crop_h) // 2)
    left = tf.where(found, tf.cast(tf.floor(u[1] * tf.cast(width - crop_w + 1, tf.float32)), tf.int32),
                    (width - crop_w) // 2)
    # float32 rounding must never push the window out of the image
    top = tf.clip_by_value(top, 0, height - crop_h)
    left = tf.clip_by_value(left, 0, width - crop_w)
    return top, left, crop_h, crop_w


def decode_and_random_crop(image: tf.Tensor, seed, scale, ratio, encoded: bool) -> tf.Tensor:
    """The random-resized-crop window of an image (encoded bytes or decoded), uint8 [h, w, 3].

    JPEG bytes decode only the window (`decode_and_crop_jpeg`), the large saving on ImageNet;
    other formats decode whole and are sliced.
    """
    def crop(decoded):
        shape = tf.shape(decoded)
        top, left, h, w = random_resized_crop_window(seed, shape[0], shape[1], scale, ratio)
        return decoded[top:top + h, left:left + w]

    if not encoded:
        return crop(as_rgb(image))

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image)
        top, left, h, w = random_resized_crop_window(seed, shape[0], shape[1], scale, ratio)
        return tf.image.decode_and_crop_jpeg(image, tf.stack([top, left, h, w]), channels=3,
                                             dct_method='INTEGER_ACCURATE')

    out = tf.cond(tf.io.is_jpeg(image), jpeg, lambda: crop(decode_rgb(image)))
    out.set_shape([None, None, 3])
    return out


def resize(image: tf.Tensor, size: Sequence[int], method: str = 'bicubic') -> tf.Tensor:
    """Resizes uint8 [H, W, 3] to `size` (h, w) like PIL: antialiased when shrinking, rounded to uint8."""
    out = tf.image.resize(image, size, method=method, antialias=method != 'nearest')
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(out, tf.float32)), 0.0, 255.0), tf.uint8)


def eval_resize_crop(image: tf.Tensor, size: Sequence[int], crop_pct: float,
                     method: str = 'bicubic') -> tf.Tensor:
    """timm's eval transform: resize so the crop is `crop_pct` of it, then the centred crop.

    Square `size`: shorter side to floor(size / crop_pct), the longer one in proportion
    (truncated, torchvision's Resize(int)). Non-square: timm's ResizeKeepRatio, the smallest
    scale that covers (floor(h / crop_pct), floor(w / crop_pct)).
    """
    height, width = int(size[0]), int(size[1])
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    shape = tf.shape(image)
    in_h, in_w = shape[0], shape[1]
    if scaled[0] == scaled[1]:
        short, long = tf.minimum(in_h, in_w), tf.maximum(in_h, in_w)
        new_long = scaled[0] * long // short
        new_h = tf.where(in_h <= in_w, scaled[0], new_long)
        new_w = tf.where(in_h <= in_w, new_long, scaled[0])
    else:
        in_hf, in_wf = tf.cast(in_h, tf.float64), tf.cast(in_w, tf.float64)
        factor = tf.minimum(in_hf / scaled[0], in_wf / scaled[1])
        new_h = tf.cast(tf.round(in_hf / factor), tf.int32)
        new_w = tf.cast(tf.round(in_wf / factor), tf.int32)
    image = resize(image, tf.stack([new_h, new_w]), method)
    # torchvision's CenterCrop: offsets int(round(delta / 2)), Python's round-half-to-even like tf.round
    top = tf.cast(tf.round(tf.cast(new_h - height, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - width, tf.float32) / 2), tf.int32)
    out = image[top:top + height, left:left + width]
    out.set_shape([height, width, 3])
    return out


def random_flip(image: tf.Tensor, seed) -> tf.Tensor:
    """Horizontal flip with probability 0.5."""
    return tf.cond(_uniform(seed) < 0.5, lambda: image[:, ::-1], lambda: image)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """uint8 -> float32 (x / 255 - mean) / std, per channel (mean/std on the 0..1 scale)."""
    x = tf.cast(image, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


# ------------------------------------------------------------------ PIL-equivalent pixel ops
# All take and return uint8 [H, W, 3].


def _u8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
    """PIL's RGB -> 'L' conversion, exactly (ITU-R 601-2 in 16-bit fixed point), int32 [H, W]."""
    x = tf.cast(image, tf.int32)
    weighted = x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000
    return tf.bitwise.right_shift(weighted, 16)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """PIL's Image.blend(degenerate, image, factor): interpolates or extrapolates, truncates, clips."""
    degenerate = tf.cast(degenerate, tf.float32)
    mixed = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
    return _u8(tf.floor(mixed))


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.autocontrast: stretch each channel's [min, max] to [0, 255] (truncating LUT)."""
    x = tf.cast(image, tf.float64)
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = _u8(tf.floor(x * scale - lo * scale))
    return tf.where(hi > lo, stretched, image)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    x = tf.cast(channel, tf.int32)
    hist = tf.math.bincount(x, minlength=256, maxlength=256)
    last = 255 - tf.argmax(tf.cast(hist[::-1] > 0, tf.int32), output_type=tf.int32)
    step = (tf.reduce_sum(hist) - hist[last]) // 255
    lut = (step // 2 + tf.cumsum(hist, exclusive=True)) // tf.maximum(step, 1)
    equalized = tf.cast(tf.clip_by_value(tf.gather(lut, x), 0, 255), tf.uint8)
    identity = (tf.math.count_nonzero(hist) <= 1) | (step == 0)
    return tf.where(identity, channel, equalized)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.equalize: per-channel histogram equalisation with PIL's look-up table."""
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255 - image


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
    """Keeps the `bits` most significant bits (0 bits: black), as PIL ImageOps.posterize."""
    shift = 8 - tf.cast(bits, tf.int32)
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(x, shift), shift), tf.uint8)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
    """Inverts the pixels at or above `threshold` (PIL ImageOps.solarize)."""
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.where(x < tf.cast(threshold, tf.int32), x, 255 - x), tf.uint8)


def solarize_add(image: tf.Tensor, addition, threshold: int = 128) -> tf.Tensor:
    """Adds `addition` (saturating) to the pixels below `threshold` (timm's solarize_add)."""
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.where(x < threshold, tf.minimum(x + tf.cast(addition, tf.int32), 255), x),
                   tf.uint8)


def color(image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance.Color: blend with the grey version (0 = grey, 1 = original)."""
    grey = tf.tile(_grey(image)[..., None], [1, 1, 3])
    return _blend(grey, image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance.Contrast: blend with the image's mean grey level (rounded as PIL)."""
    mean = tf.reduce_mean(tf.cast(_grey(image), tf.float64))
    degenerate = tf.fill(tf.shape(image), tf.floor(mean + 0.5))
    return _blend(degenerate, image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance.Brightness: blend with black."""
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (its border left as is)."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding='VALID')[0]
    smooth = tf.clip_by_value(tf.floor(smooth + 0.5), 0.0, 255.0)
    interior = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior > 0, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), x[0])
    return _blend(degenerate, image, factor)


def affine(image: tf.Tensor, matrix: Sequence, fill: Sequence[float]) -> tf.Tensor:
    """PIL's `Image.transform(size, AFFINE, matrix, fillcolor=fill)`, bilinear.

    `matrix` = (a, b, c, d, e, f) maps an output point (x, y) to the input point
    (a x + b y + c, d x + e y + f) in PIL's continuous coordinates (pixel i spans [i, i + 1)).
    Output pixels whose centre maps outside the input take `fill`, a hard edge as in PIL.
    """
    a, b, c, d, e, f = [tf.cast(v, tf.float32) for v in matrix]
    # PIL samples at pixel centres (x + 0.5); TF's transform works on pixel indices.
    c_index = c + 0.5 * (a + b) - 0.5
    f_index = f + 0.5 * (d + e) - 0.5
    transform = tf.stack([a, b, c_index, d, e, f_index, 0.0, 0.0])[None]
    size = tf.shape(image)[:2]
    x = tf.cast(image, tf.float32)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transform, output_shape=size, fill_value=0.0,
        interpolation='BILINEAR', fill_mode='NEAREST')[0]
    inside = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.ones_like(x[..., :1]), transforms=transform, output_shape=size, fill_value=0.0,
        interpolation='NEAREST', fill_mode='CONSTANT')[0]
    fill = tf.cast(fill, tf.float32)
    return _u8(tf.round(tf.where(inside > 0.5, warped, fill)))


def rotate(image: tf.Tensor, degrees, fill) -> tf.Tensor:
    """PIL `Image.rotate(degrees)`: counter-clockwise about the image centre."""
    shape = tf.cast(tf.shape(image), tf.float32)
    cy, cx = shape[0] / 2.0, shape[1] / 2.0
    angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    a, b, d, e = tf.cos(angle), tf.sin(angle), -tf.sin(angle), tf.cos(angle)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return affine(image, (a, b, c, d, e, f), fill)


def shear_x(image, factor, fill):
    return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image, factor, fill):
    return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), fill)


def translate_x(image, fraction, fill):
    """Shifts by `fraction` of the width (timm's TranslateXRel)."""
    pixels = tf.cast(fraction, tf.float32) * tf.cast(tf.shape(image)[1], tf.float32)
    return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image, fraction, fill):
    """Shifts by `fraction` of the height (timm's TranslateYRel)."""
    pixels = tf.cast(fraction, tf.float32) * tf.cast(tf.shape(image)[0], tf.float32)
    return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


# ------------------------------------------------------------------------------- RandAugment
# timm's `_RAND_INCREASING_TRANSFORMS`: each entry maps (image, level in [0, 10], sign in {-1, 1},
# fill colour) to the op with timm's level -> argument function.

_LEVEL_MAX = 10.0


def _truncate(x) -> tf.Tensor:
    return tf.cast(tf.floor(x), tf.int32)  # int() of the non-negative level arguments


def _enhance_factor(level, sign):
    return 1.0 + sign * (level / _LEVEL_MAX) * 0.9  # [0.1, 1.9]


RAND_AUGMENT_OPS: dict[str, Callable] = {
    'AutoContrast': lambda img, level, sign, fill: auto_contrast(img),
    'Equalize': lambda img, level, sign, fill: equalize(img),
    'Invert': lambda img, level, sign, fill: invert(img),
    'Rotate': lambda img, level, sign, fill: rotate(img, sign * level / _LEVEL_MAX * 30.0, fill),
    'PosterizeIncreasing': lambda img, level, sign, fill: posterize(
        img, 4 - _truncate(level / _LEVEL_MAX * 4.0)),
    'SolarizeIncreasing': lambda img, level, sign, fill: solarize(
        img, 256 - tf.minimum(256, _truncate(level / _LEVEL_MAX * 256.0))),
    'SolarizeAdd': lambda img, level, sign, fill: solarize_add(
        img, tf.minimum(128, _truncate(level / _LEVEL_MAX * 110.0))),
    'ColorIncreasing': lambda img, level, sign, fill: color(img, _enhance_factor(level, sign)),
    'ContrastIncreasing': lambda img, level, sign, fill: contrast(img, _enhance_factor(level, sign)),
    'BrightnessIncreasing': lambda img, level, sign, fill: brightness(
        img, _enhance_factor(level, sign)),
    'SharpnessIncreasing': lambda img, level, sign, fill: sharpness(
        img, _enhance_factor(level, sign)),
    'ShearX': lambda img, level, sign, fill: shear_x(img, sign * level / _LEVEL_MAX * 0.3, fill),
    'ShearY': lambda img, level, sign, fill: shear_y(img, sign * level / _LEVEL_MAX * 0.3, fill),
    'TranslateXRel': lambda img, level, sign, fill: translate_x(
        img, sign * level / _LEVEL_MAX * 0.45, fill),
    'TranslateYRel': lambda img, level, sign, fill: translate_y(
        img, sign * level / _LEVEL_MAX * 0.45, fill),
}


@tf.function(autograph=False, input_signature=[
    tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32),
    tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([3], tf.float32)])
def _rand_augment_op(image, op, level, sign, fill):
    """RAND_AUGMENT_OPS[op]: traced once per process and shared by every layer and pipeline."""
    ops = list(RAND_AUGMENT_OPS.values())
    return tf.switch_case(op, [lambda fn=fn: fn(image, level, sign, fill) for fn in ops])


def rand_augment(image: tf.Tensor, seed, num_layers: int = 2, magnitude: float = 9.0,
                 magnitude_std: float = 0.5, fill: Sequence[float] = (128, 128, 128),
                 prob: float = 0.5) -> tf.Tensor:
    """timm's RandAugment: `num_layers` ops drawn with replacement, each applied with `prob`.

    The magnitude of each applied op is N(magnitude, magnitude_std) (uniform on [0, magnitude]
    for an infinite std, timm's 'mstd101' and up), clipped to [0, 10]; the signed ops negate their
    argument with probability 0.5. `fill` is the colour of the area that geometric ops uncover
    (timm: the dataset mean, 0..255).
    """
    fill = tf.constant([float(v) for v in fill], tf.float32)
    shape = image.shape
    for layer_seed in split_seed(seed, num_layers):
        s_op, s_apply, s_level, s_sign = split_seed(layer_seed, 4)
        op = tf.random.stateless_uniform([], s_op, minval=0, maxval=len(RAND_AUGMENT_OPS),
                                         dtype=tf.int32)
        if math.isinf(magnitude_std) or magnitude_std > 100:
            level = _uniform(s_level, maxval=magnitude)
        elif magnitude_std > 0:
            level = magnitude + magnitude_std * tf.random.stateless_normal([], s_level)
        else:
            level = tf.constant(float(magnitude))
        level = tf.clip_by_value(level, 0.0, _LEVEL_MAX)
        sign = tf.where(_uniform(s_sign) > 0.5, -1.0, 1.0)
        image = tf.cond(_uniform(s_apply) <= prob,
                        lambda image=image, op=op, level=level, sign=sign:
                            _rand_augment_op(image, op, level, sign, fill),
                        lambda image=image: image)
        image.set_shape(shape)
    return image


def color_jitter(image: tf.Tensor, seed, strength: float) -> tf.Tensor:
    """torchvision ColorJitter(brightness=s, contrast=s, saturation=s) in a random order."""
    s_order, s_b, s_c, s_s = split_seed(seed, 4)
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    factors = {'b': _uniform(s_b, (), low, high), 'c': _uniform(s_c, (), low, high),
               's': _uniform(s_s, (), low, high)}
    enhance = {'b': brightness, 'c': contrast, 's': color}
    orders = ['bcs', 'bsc', 'cbs', 'csb', 'sbc', 'scb']

    def run(order):
        out = image
        for name in order:
            out = enhance[name](out, factors[name])
        return out

    which = tf.random.stateless_uniform([], s_order, minval=0, maxval=6, dtype=tf.int32)
    return tf.switch_case(which, [lambda order=order: run(order) for order in orders])


def random_erasing(image: tf.Tensor, seed, prob: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3,
                   attempts: int = 10) -> tf.Tensor:
    """timm RandomErasing in 'pixel' mode on a normalised float [H, W, C] image.

    With probability `prob`, up to `attempts` boxes are drawn (area fraction uniform in
    [min_area, max_area], log-uniform aspect in [min_aspect, 1 / min_aspect]); the first that fits
    strictly inside is filled with per-pixel N(0, 1) noise; if none fits nothing is erased.
    """
    s_apply, s_area, s_aspect, s_offset, s_noise = split_seed(seed, 5)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    area = tf.cast(height * width, tf.float32)
    target = _uniform(s_area, [attempts], min_area, max_area) * area
    aspect = tf.exp(_uniform(s_aspect, [attempts], math.log(min_aspect), -math.log(min_aspect)))
    box_h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    box_w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    fits = (box_w < width) & (box_h < height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    box_h, box_w = box_h[first], box_w[first]
    u = _uniform(s_offset, [2])
    top = tf.cast(tf.floor(u[0] * tf.cast(height - box_h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(u[1] * tf.cast(width - box_w + 1, tf.float32)), tf.int32)

    def erase():
        rows = tf.range(height)[:, None]
        cols = tf.range(width)[None, :]
        box = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        noise = tf.random.stateless_normal(shape, s_noise, dtype=image.dtype)
        return tf.where(box[..., None], noise, image)

    apply = (_uniform(s_apply) <= prob) & tf.reduce_any(fits)
    return tf.cond(apply, erase, lambda: image)
