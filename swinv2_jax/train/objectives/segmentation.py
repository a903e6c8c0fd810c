"""The `segmentation` training objective: UperNet (models/upernet.py) on per-pixel class masks.

Train step: per-pixel cross-entropy ignoring `seg.ignore_index`, plus `seg.aux_weight` (0.4) times
the auxiliary FCN head's; the mean is over all pixels of the batch, ignored ones counting as zero
(mmsegmentation's default, `avg_non_ignore=False`; `seg.avg_non_ignore=True` divides by the
labelled pixels). BatchNorm statistics are updated in the step and kept in the train state.

Evaluation (as mmsegmentation's `slide_inference` / `whole_inference` and `mean_iou`): the image
resized to `seg.test_scale` (keeping its ratio; data/seg_transforms.py) is run in windows of the
model's size every `seg.stride` pixels (windows clamped to the image, logits averaged where they
overlap), or whole; the logits are resized bilinearly (PyTorch's align_corners=False) to the
original size, and the per-class intersection and union of the argmax with the original labels
are summed over the whole set: eval_miou (mean over classes present in labels or predictions),
eval_macc (mean per-class accuracy over classes present in the labels), eval_aacc (pixel accuracy).
Shapes are fixed for jit: images arrive on a canvas with their size, labels on a label canvas.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from swinv2_jax.models import UperNet, create_model, model_fields, model_from_fields
from swinv2_jax.train import common, config_lib

NAME = 'segmentation'
MODEL_TYPE = UperNet


def data():
    """The input package of this objective (TensorFlow, imported when a run starts)."""
    from swinv2_jax.data import segmentation
    return segmentation


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> UperNet:
    overrides = config_lib.as_overrides(config)
    overrides.setdefault('num_classes', num_classes)
    if not config.model.startswith('upernet_') and not config.model.startswith('openmmlab/'):
        raise ValueError(f"objective 'segmentation' trains a segmentation model; config.model={config.model!r} "
                         f"is not one: use 'upernet_' + a backbone name (e.g. upernet_{config.model})")
    return create_model(config.model, **overrides)


# ----------------------------------------------------------------------------------------------
# Loss and train step
# ----------------------------------------------------------------------------------------------

def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int, avg_non_ignore: bool = False
                        ) -> jax.Array:
    """Mean per-pixel cross-entropy of logits [B, H, W, C] against int labels [B, H, W], ignored
    pixels contributing 0; divided by all pixels (mmseg's default) or by the labelled ones."""
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0] * valid
    denom = jnp.maximum(jnp.sum(valid), 1) if avg_non_ignore else valid.size
    return jnp.sum(nll) / denom


def train_step(state: common.TrainState, batch: Dict[str, jax.Array], *, model: UperNet, tx, schedule, seed: int,
               grad_accum_steps: int, ema_decay: float, ignore_index: int, aux_weight: float,
               avg_non_ignore: bool) -> Tuple[common.TrainState, Dict]:
    _, dropout_rng = common.step_rngs(seed, state.step)
    labels = batch['label']

    def loss_fn(params):
        (logits, aux), new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats}, batch['image'],
                                              train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
        loss = pixel_cross_entropy(logits, labels, ignore_index, avg_non_ignore)
        if aux is not None and aux_weight:
            loss = loss + aux_weight * pixel_cross_entropy(aux, labels, ignore_index, avg_non_ignore)
        return loss, new_vars['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, metrics = common.apply_gradients(state, loss, grads, tx=tx, schedule=schedule,
                                            grad_accum_steps=grad_accum_steps, ema_decay=ema_decay)
    return state.replace(batch_stats=batch_stats), metrics


# ----------------------------------------------------------------------------------------------
# Inference on a canvas: sliding windows or whole, then back to the original size
# ----------------------------------------------------------------------------------------------

def _grid(n: int, crop: int, stride: int) -> int:
    """mmseg's window count along an axis of n pixels: max(n - crop + stride - 1, 0) // stride + 1."""
    return jnp.maximum(n - crop + stride - 1, 0) // stride + 1


def slide_logits(fn: Callable[[jax.Array], jax.Array], images: jax.Array, sizes: jax.Array, crop: Tuple[int, int],
                 stride: Tuple[int, int], num_classes: int) -> jax.Array:
    """mmseg's slide_inference on a batch of canvases [B, Hc, Wc, 3] holding images of `sizes`
    [B, 2]: windows y1 = i * stride clamped so that they end inside the image (max(h - crop, 0)),
    logits of `fn` ([b, crop, crop, 3] -> [b, crop, crop, C]) summed and divided by the count of
    windows over each pixel. Windows are always `crop` (an image smaller than the crop is seen with
    its canvas padding). Returns [B, Hc, Wc, C] (0 outside each image)."""
    b, hc, wc, _ = images.shape
    ch, cw = crop
    nh_max, nw_max = (max(hc - ch + stride[0] - 1, 0) // stride[0] + 1,
                      max(wc - cw + stride[1] - 1, 0) // stride[1] + 1)
    nh, nw = _grid(sizes[:, 0], ch, stride[0]), _grid(sizes[:, 1], cw, stride[1])

    def body(k, carry):
        preds, count = carry
        i, j = k // nw_max, k % nw_max
        y2 = jnp.minimum(i * stride[0] + ch, sizes[:, 0])
        x2 = jnp.minimum(j * stride[1] + cw, sizes[:, 1])
        y1, x1 = jnp.maximum(y2 - ch, 0), jnp.maximum(x2 - cw, 0)
        valid = ((i < nh) & (j < nw)).astype(jnp.float32)
        windows = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (ch, cw, im.shape[-1])))(
            images, y1, x1)
        out = jax.lax.cond(jnp.any(valid > 0), lambda w: fn(w).astype(jnp.float32),
                           lambda w: jnp.zeros((b, ch, cw, num_classes), jnp.float32), windows)
        # the part of a window beyond the image (an image smaller than the crop) is not counted
        yy = y1[:, None] + jnp.arange(ch)[None]
        xx = x1[:, None] + jnp.arange(cw)[None]
        inside = ((yy < sizes[:, :1])[:, :, None] & (xx < sizes[:, 1:])[:, None, :]).astype(jnp.float32)
        weight = inside * valid[:, None, None]

        def add(p, c, o, w, y, x):
            p = jax.lax.dynamic_update_slice(p, jax.lax.dynamic_slice(p, (y, x, 0), o.shape) + o * w[..., None],
                                             (y, x, 0))
            c = jax.lax.dynamic_update_slice(c, jax.lax.dynamic_slice(c, (y, x), w.shape) + w, (y, x))
            return p, c
        return jax.vmap(add)(preds, count, out, weight, y1, x1)

    init = (jnp.zeros((b, hc, wc, num_classes), jnp.float32), jnp.zeros((b, hc, wc), jnp.float32))
    preds, count = jax.lax.fori_loop(0, nh_max * nw_max, body, init)
    return preds / jnp.maximum(count, 1.0)[..., None]


def _resize_axis(x: jax.Array, n_in: jax.Array, n_out: jax.Array, size: int, axis: int) -> jax.Array:
    """PyTorch's bilinear taps (align_corners=False) from the first n_in entries of `axis` to n_out
    (traced sizes), written into `size` entries (those past n_out are don't-cares)."""
    scale = n_in.astype(jnp.float32) / n_out.astype(jnp.float32)
    src = jnp.maximum((jnp.arange(size, dtype=jnp.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
    i1 = jnp.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    shape = [1] * x.ndim
    shape[axis] = size
    lam = lam.reshape(shape)
    return jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, i1, axis=axis) * lam


def resize_to_original(logits: jax.Array, size: jax.Array, orig_size: jax.Array, label_canvas: Tuple[int, int]
                       ) -> jax.Array:
    """One example's logits [Hc, Wc, C] (its image in the top-left `size`) resized to `orig_size` in a
    `label_canvas` [Hl, Wl, C] (width first, then height: PyTorch's order)."""
    x = _resize_axis(logits, size[1], orig_size[1], label_canvas[1], 1)
    return _resize_axis(x, size[0], orig_size[0], label_canvas[0], 0)


def confusion(pred: jax.Array, label: jax.Array, num_classes: int, ignore_index: int) -> jax.Array:
    """[C, C] counts of (label row, prediction column) over the labelled pixels."""
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = jnp.where(valid, label * num_classes + pred, 0)
    counts = jnp.bincount(index.reshape(-1), weights=valid.reshape(-1).astype(jnp.float32),
                          length=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def predict(variables, batch: Dict[str, jax.Array], *, model: UperNet, mode: str, stride: Tuple[int, int]
            ) -> jax.Array:
    """Logits [B, Hc, Wc, C] of the canvases (sliding windows or whole)."""
    def fn(x):
        return model.apply(variables, x, train=False)
    if mode == 'whole':
        return fn(batch['image']).astype(jnp.float32)
    return slide_logits(fn, batch['image'], batch['size'], tuple(model.img_size), stride, model.num_classes)


def eval_step(variables, batch: Dict[str, jax.Array], *, model: UperNet, mode: str, stride: Tuple[int, int],
              ignore_index: int) -> Dict[str, jax.Array]:
    """Sums over the batch: the [C, C] confusion at the original resolution, and the example count."""
    logits = predict(variables, batch, model=model, mode=mode, stride=stride)
    label_canvas = tuple(batch['label'].shape[1:3])
    c = model.num_classes

    def one(args):
        lg, size, orig, label, m = args
        pred = jnp.argmax(resize_to_original(lg, size, orig, label_canvas), axis=-1)
        return confusion(pred, label, c, ignore_index) * m

    per_example = jax.lax.map(one, (logits, batch['size'], batch['orig_size'], batch['label'], batch['mask']))
    return {'confusion': jnp.sum(per_example, axis=0), 'count': jnp.sum(batch['mask'])}


def eval_metrics(prefix: str, totals: Dict[str, np.ndarray]) -> Dict[str, float]:
    """mmsegmentation's mIoU, mAcc and aAcc from the set's confusion matrix (fractions)."""
    m = mmseg_metrics(np.asarray(totals['confusion'], np.float64))
    return {f'{prefix}_miou': m['miou'], f'{prefix}_macc': m['macc'], f'{prefix}_aacc': m['aacc'],
            f'{prefix}_examples': int(totals['count'])}


def mmseg_metrics(conf: np.ndarray) -> Dict[str, Any]:
    """As mmseg's `mean_iou` + `mean_accuracy`: per class IoU = I / (P + L - I) and Acc = I / L
    (NaN where the denominator is 0, left out of the means), aAcc = sum(I) / sum(L)."""
    inter, label_area, pred_area = np.diag(conf), conf.sum(1), conf.sum(0)
    union = pred_area + label_area - inter
    with np.errstate(divide='ignore', invalid='ignore'):
        iou, acc = inter / union, inter / label_area
    return {'iou': iou, 'acc': acc, 'miou': float(np.nanmean(iou)) if np.any(union > 0) else float('nan'),
            'macc': float(np.nanmean(acc)) if np.any(label_area > 0) else float('nan'),
            'aacc': float(inter.sum() / max(label_area.sum(), 1.0))}


def step_functions(model: UperNet, config: ml_collections.ConfigDict, *, tx, schedule) -> Tuple[Callable, Callable]:
    seg = config.seg
    if seg.test_mode not in ('slide', 'whole'):
        raise ValueError(f"seg.test_mode must be 'slide' or 'whole', got {seg.test_mode!r}")
    stride = tuple(int(s) for s in seg.stride)
    step = functools.partial(train_step, model=model, seed=int(config.seed), ignore_index=int(seg.ignore_index),
                             aux_weight=float(seg.aux_weight), avg_non_ignore=bool(seg.avg_non_ignore),
                             **common.update_options(config, tx=tx, schedule=schedule))
    return step, functools.partial(eval_step, model=model, mode=seg.test_mode, stride=stride,
                                   ignore_index=int(seg.ignore_index))


# ----------------------------------------------------------------------------------------------
# Checkpoint meta and fine-tuning sources
# ----------------------------------------------------------------------------------------------

def meta_fields(model: UperNet) -> Dict[str, Any]:
    return {'objective': NAME, 'model': model_fields(model)}


def model_from_meta(meta: Dict[str, Any]) -> UperNet:
    return model_from_fields(meta['model'])


def backbone_params(params: Dict, source_name: str = '') -> Dict:
    """A classifier or another UperNet fine-tuned from a segmentation run takes its backbone."""
    del source_name
    return params['backbone']


__all__ = ['MODEL_TYPE', 'NAME', 'backbone_params', 'build_model', 'confusion', 'data', 'eval_metrics', 'eval_step',
           'meta_fields', 'mmseg_metrics', 'model_from_meta', 'pixel_cross_entropy', 'predict', 'resize_to_original',
           'slide_logits', 'step_functions', 'train_step']
