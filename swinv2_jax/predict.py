r"""Predict image files with a pretrained model, whatever folder it came in.

  python -m swinv2_jax.predict ./swinv2-tiny-patch4-window8-256 photos/ cat.jpg [--top-k 5] [--json]
  python -m swinv2_jax.predict ./upernet-swin-tiny photos/ --out masks/ [--json]

SOURCE is anything `swinv2_jax.from_pretrained` reads (a transformers or timm hub folder, a
converted checkpoint, a train.py workdir). IMAGES are files or folders (JPEG, PNG, WebP under a
folder, recursively). Each image gets the checkpoint's own evaluation preprocessing
(swinv2_jax.images); the model runs on batches of one fixed size, compiled once (the last batch
padded). Class names: the checkpoint's, else the ImageNet-1K / 22K names for 1000 / 21841 classes,
else the indices. A segmentation model writes each image's mask (argmax per pixel, resized to the
image's size by nearest neighbour) as a palette PNG into --out. A file that cannot be read is reported in its place and the others are still
predicted; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np


def class_names(info, num_classes: int) -> List[str]:
    """The checkpoint's names, else the shipped ImageNet names for 1000 / 21841 classes, else indices."""
    from swinv2_jax.labels import imagenet_names
    if info.labels is not None and len(info.labels) == num_classes:
        return list(info.labels)
    return imagenet_names(num_classes) or [str(i) for i in range(num_classes)]


# ----------------------------------------------------------------------------------------------
# Tasks: what a model's outputs become (info.task picks the row).
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Task:
    # (model, variables, info, args) -> batch [B, H, W, 3] -> per-image outputs on the host
    make_step: Callable[..., Callable[[np.ndarray], Any]]
    # (file, the image's output, args, model, info) -> (JSON record, readable text)
    describe: Callable[..., tuple]


def _classification_step(model, variables, info, args):
    import jax
    if not getattr(model, 'num_classes', 0):
        raise ValueError('the model has no classifier head (num_classes=0): nothing to predict')
    k = min(int(args.top_k), model.num_classes)

    @jax.jit
    def step(variables, images):
        probs = jax.nn.softmax(model.apply(variables, images, train=False).astype('float32'), axis=-1)
        return jax.lax.top_k(probs, k)

    variables = jax.device_put(variables)
    return lambda images: tuple(np.asarray(a) for a in step(variables, images))


def _classification_describe(file, output, args, model, info):
    probs, indices = output
    names = class_names(info, model.num_classes)
    top = [{'index': int(i), 'label': names[int(i)], 'prob': float(p)} for p, i in zip(probs, indices)]
    text = '\n'.join([file] + [f'  {t["prob"]:7.2%}  {t["label"]}' for t in top])
    return {'file': file, 'top_k': top}, text


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 mask colours, fixed: PASCAL VOC's bit-interleaved palette (class 0
    black), distinct for up to 256 classes."""
    index = np.arange(num_classes)
    colours = np.zeros((num_classes, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """`mask` [h, w] at (height, width): each output pixel takes the input pixel under its centre
    (PyTorch's 'nearest-exact', Pillow's NEAREST)."""
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def write_mask(path: str, mask: np.ndarray, num_classes: int) -> None:
    """A class-index mask as a PNG, atomically: palette-coloured (its pixel values are the class
    indices) for up to 256 classes, else 16-bit greyscale."""
    import os

    from PIL import Image
    if num_classes <= 256:
        image = Image.fromarray(mask.astype(np.uint8), mode='P')
        image.putpalette(palette(num_classes).reshape(-1).tolist())
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    tmp = path + '.tmp'
    image.save(tmp, format='PNG')
    os.replace(tmp, path)


def _segmentation_step(model, variables, info, args):
    import os

    import jax
    if not getattr(args, 'out', None):
        raise ValueError('a segmentation model writes its masks as PNG files: pass --out DIR')
    os.makedirs(args.out, exist_ok=True)

    @jax.jit
    def step(variables, images):
        return model.apply(variables, images, train=False).argmax(axis=-1).astype('int32')

    variables = jax.device_put(variables)
    return lambda images: np.asarray(step(variables, images))


def _mask_path(file: str, args) -> str:
    """out/<file's stem>.png, numbered when two inputs of this run share a stem."""
    import os
    written = vars(args).setdefault('_masks', set())
    stem, n = os.path.splitext(os.path.basename(file))[0], 0
    name = stem
    while name in written:
        n += 1
        name = f'{stem}-{n}'
    written.add(name)
    return os.path.join(args.out, name + '.png')


def _segmentation_describe(file, output, args, model, info):
    from swinv2_jax.images import load_image
    image = load_image(file)   # its displayed size (EXIF orientation applied), as the input was made
    mask = resize_nearest(output, image.height, image.width)
    path = _mask_path(file, args)
    write_mask(path, mask, model.num_classes)
    names = info.labels if info.labels is not None and len(info.labels) == model.num_classes else \
        [str(i) for i in range(model.num_classes)]
    present = [str(names[i]) for i in np.unique(mask)]
    return {'file': file, 'mask': path, 'classes': present}, f'{file}\n  mask: {path}\n  classes: {", ".join(present)}'


TASKS: Dict[str, Task] = {
    'classification': Task(make_step=_classification_step, describe=_classification_describe),
    # argmax per pixel, resized to the image's own size, a palette PNG in --out
    'segmentation': Task(make_step=_segmentation_step, describe=_segmentation_describe),
}


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

def _split(outputs, n: int) -> List[Any]:
    """Per-image outputs from batched ones (a tuple of arrays, or one array)."""
    if isinstance(outputs, tuple):
        return [tuple(o[i] for o in outputs) for i in range(n)]
    return [outputs[i] for i in range(n)]


def predict(source: str, images: Sequence[str], args, out=sys.stdout, err=sys.stderr) -> int:
    """Predict every image and print the results in input order; returns the exit status."""
    from swinv2_jax import images as imgs
    from swinv2_jax.pretrained import from_pretrained
    model, variables, info = from_pretrained(source)
    if info.task not in TASKS:
        raise ValueError(f'{source}: a {info.task} model; predict handles {", ".join(TASKS)}')
    task = TASKS[info.task]
    files = imgs.find_images(images)
    if not files:
        raise ValueError(f'no image files in {", ".join(images)} ({", ".join(imgs.IMAGE_SUFFIXES)})')
    step = task.make_step(model, variables, info, args)
    batch_size = max(1, min(int(args.batch_size), len(files)))   # one shape: compiled once
    height, width = info.input_size
    failed = 0
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        batch = np.zeros((batch_size, height, width, 3), np.float32)   # the last one padded
        errors: Dict[int, str] = {}
        rows = []
        for i, file in enumerate(chunk):
            try:
                batch[len(rows)] = imgs.eval_transform(imgs.load_image(file), info)
                rows.append(i)
            except (ValueError, OSError) as e:
                errors[i] = str(e)
        outputs = _split(step(batch), len(rows)) if rows else []
        results = dict(zip(rows, outputs))
        for i, file in enumerate(chunk):
            if i in errors:
                failed += 1
                if args.json:
                    print(json.dumps({'file': file, 'error': errors[i]}), file=out, flush=True)
                else:
                    print(f'{file}\n  error: {errors[i]}', file=err, flush=True)
                continue
            record, text = task.describe(file, results[i], args, model, info)
            print(json.dumps(record) if args.json else text, file=out, flush=True)
    if failed:
        print(f'{failed} of {len(files)} files could not be read', file=err)
    return 1 if failed else 0


def parse_args(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(prog='python -m swinv2_jax.predict', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', help='a transformers or timm hub folder, a converted checkpoint or a '
                                  'train.py workdir (nothing is downloaded)')
    p.add_argument('images', nargs='+', help='image files or folders (JPEG, PNG, WebP)')
    p.add_argument('--top-k', type=int, default=5, help='classes shown per image (default 5)')
    p.add_argument('--batch-size', type=int, default=32, help='images per forward pass (default 32)')
    p.add_argument('--json', action='store_true', help='one JSON object per line and image')
    p.add_argument('--out', metavar='DIR', help='segmentation models: where the mask PNGs go (one per image, '
                                                'named after it; pixel values are class indices)')
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        p.error('--top-k and --batch-size must be at least 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return predict(args.source, args.images, args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
