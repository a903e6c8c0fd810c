"""Image files to model inputs with Pillow: decoding, and a checkpoint's evaluation preprocessing.

The transform is timm's evaluation transform (`transforms_imagenet_eval`), which torchvision runs
on PIL images, so the pixels are the reference's own: `crop_mode='center'` resizes the shorter
side to floor(size / crop_pct) (the longer in proportion) and takes the centred crop;
`'squash'` resizes both sides to floor(size / crop_pct), then crops (crop_pct 1.0: the Hugging
Face `ViTImageProcessor`, which resizes to the size and does not crop). Then /255 and
(x - mean) / std per channel. Pillow is needed here only (`pip install swinv2-jax[predict]`).
"""
from __future__ import annotations

import math
import os
from typing import Sequence, Tuple

import numpy as np

try:
    from PIL import Image, ImageOps
except ImportError as e:  # the model package works without it; only image files need it
    raise ImportError('reading image files needs Pillow: pip install pillow '
                      '(or pip install "swinv2-jax[predict]")') from e

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp')
# timm / torchvision interpolation names -> Pillow's filters; Hugging Face writes Pillow's numbers
INTERPOLATIONS = {'nearest': Image.Resampling.NEAREST, 'bilinear': Image.Resampling.BILINEAR,
                  'bicubic': Image.Resampling.BICUBIC, 'box': Image.Resampling.BOX,
                  'hamming': Image.Resampling.HAMMING, 'lanczos': Image.Resampling.LANCZOS}
CROP_MODES = ('center', 'squash')   # as swinv2_jax.pretrained.CROP_MODES (which checks them, without Pillow)


def load_image(path) -> Image.Image:
    """An RGB image from a file: EXIF orientation applied; greyscale, palette, CMYK and alpha
    converted to RGB (alpha dropped, as timm's and Hugging Face's loaders do).

    Raises ValueError naming the file when it is not a readable image."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f'cannot read {path} as an image ({type(e).__name__}: {e})') from e
    if image.mode == 'P' and 'transparency' in image.info:
        image = image.convert('RGBA')   # a palette with transparency: via RGBA, as Pillow advises
    return image.convert('RGB')


def resize_crop_sizes(height: int, width: int, input_size: Tuple[int, int], crop_pct: float,
                      crop_mode: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((resized height, width), (crop top, left)) of timm's evaluation transform."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f'unknown crop_mode {crop_mode!r}; valid: {", ".join(CROP_MODES)}')
    out_h, out_w = input_size
    scale = (math.floor(out_h / crop_pct), math.floor(out_w / crop_pct))
    if crop_mode == 'squash':
        size = scale
    elif out_h == out_w:  # torchvision Resize(int): the shorter side, the longer in proportion
        short, long = sorted((height, width))
        new_long = int(scale[0] * long / short)
        size = (scale[0], new_long) if height <= width else (new_long, scale[0])
    else:                 # timm: Resize((h, w) / crop_pct) for non-square sizes
        size = scale
    top = int(round((size[0] - out_h) / 2.0))
    left = int(round((size[1] - out_w) / 2.0))
    return size, (top, left)


def eval_transform(image: Image.Image, info) -> np.ndarray:
    """A [H, W, 3] float32 input from an RGB image with `info`'s preprocessing (input_size,
    crop_pct, crop_mode, interpolation, mean, std: see swinv2_jax.pretrained.PretrainedInfo)."""
    if info.interpolation not in INTERPOLATIONS:
        raise ValueError(f'unknown interpolation {info.interpolation!r}; valid: {", ".join(INTERPOLATIONS)}')
    out_h, out_w = info.input_size
    (h, w), (top, left) = resize_crop_sizes(image.height, image.width, info.input_size, info.crop_pct,
                                            info.crop_mode)
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), INTERPOLATIONS[info.interpolation])
    x = np.asarray(image, dtype=np.float32)
    if h < out_h or w < out_w:  # a crop larger than the image (crop_pct > 1): zero padding, as torchvision's
        ph, pw = max(out_h - h, 0), max(out_w - w, 0)
        x = np.pad(x, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        top, left = int(round((x.shape[0] - out_h) / 2.0)), int(round((x.shape[1] - out_w) / 2.0))
    x = x[top:top + out_h, left:left + out_w] / np.float32(255.0)
    return (x - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)


def find_images(paths: Sequence[str]) -> list:
    """Files named, and the image files (by suffix) under folders named, sorted within a folder.
    A path that does not exist is kept: reading it reports the error in its place."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files)
                             if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith('.'))
            out.extend(found)
        else:
            out.append(path)
    return out


__all__ = ['CROP_MODES', 'IMAGE_SUFFIXES', 'INTERPOLATIONS', 'eval_transform', 'find_images', 'load_image',
           'resize_crop_sizes']
