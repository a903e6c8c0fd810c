"""UperNet semantic segmentation on a SwinTransformerV2 backbone, in Flax Linen (NHWC).

"Unified Perceptual Parsing for Scene Understanding", Xiao et al. (ECCV 2018), as mmsegmentation's
`UPerHead` + `FCNHead` and Hugging Face's `UperNetForSemanticSegmentation` compute it:

* a pyramid pooling module on the last stage (PyTorch's adaptive average pooling bins: bin i of
  `out` over `n` starts at floor(i*n/out) and ends at ceil((i+1)*n/out)), each scale a 1x1 conv
  module upsampled back, concatenated with the stage and fused by a 3x3 conv module;
* FPN laterals (1x1) on stages 0-2, the top-down path (bilinear, align_corners=False, PyTorch's
  `F.interpolate` arithmetic exactly: `resize_bilinear`), a 3x3 conv on each lateral, all four
  levels upsampled to stride 4 and fused by a 3x3 conv module;
* channel dropout (`nn.Dropout2d`, mmsegmentation's `dropout_ratio`) and a 1x1 classifier;
* the auxiliary FCN head on stage 2 (training only; mmsegmentation weighs its loss by 0.4);
* the logits upsampled bilinearly to the input size, as Hugging Face does.

Every conv module is conv (no bias) + BatchNorm + ReLU; BatchNorm is PyTorch's (eps 1e-5, momentum
0.1, the running variance updated with the unbiased batch variance), its statistics in float32.
Under `jax.jit` with the batch sharded over a mesh a mean over the batch axis is the mean over
the global batch, so training-mode BatchNorm is SyncBN (what the recipes use) with no axis names.

Variables: `params` and `batch_stats`. `model.apply(variables, x)` gives logits [B, H, W, classes]
(float32); `model.apply(variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': k})`
gives `((logits, aux_logits), {'batch_stats': ...})` (aux_logits None without the auxiliary head).
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swinv2_jax.models.layers import layer_norm
from swinv2_jax.models.swin_transformer_v2 import SwinTransformerV2

Dtype = Any

BN_EPS = 1e-5        # torch.nn.BatchNorm2d / SyncBatchNorm defaults, as mmsegmentation and HF use them
BN_MOMENTUM = 0.1    # torch's: running = (1 - m) * running + m * batch
AUX_STAGE = 2        # the auxiliary FCN head reads stage 2 (mmsegmentation's in_index=2)
NUM_STAGES = 4


# ----------------------------------------------------------------------------------------------
# PyTorch's resampling, exactly: bilinear (align_corners=False) and adaptive average pooling
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _linear_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's upsample_bilinear2d source taps along one axis (align_corners=False, no antialias):
    src = max((dst + 0.5) * n_in / n_out - 0.5, 0), taps floor(src) and the next one (clamped),
    weight of the second tap src - floor(src). Downsampling reads two taps too (no antialiasing)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                     np.float32(0.0))
    i0 = np.floor(src).astype(np.int32)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def _resize_axis(x: jax.Array, n_out: int, axis: int) -> jax.Array:
    n_in = x.shape[axis]
    if n_in == n_out:
        return x  # PyTorch's taps are then the identity
    i0, i1, lam = _linear_taps(n_in, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = jnp.asarray(lam, jnp.float32).reshape(shape).astype(x.dtype)
    return jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, i1, axis=axis) * lam


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
    """[B, H, W, C] -> [B, size[0], size[1], C] as `F.interpolate(mode='bilinear',
    align_corners=False)`: width first, then height, which is PyTorch's order of arithmetic.
    (`jax.image.resize` antialiases when it downsamples, which PyTorch does not.)"""
    return _resize_axis(_resize_axis(x, int(size[1]), 2), int(size[0]), 1)


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging matrix of PyTorch's adaptive average pooling along one axis."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """[B, H, W, C] -> [B, size, size, C] as `nn.AdaptiveAvgPool2d(size)` (a bin is a rectangle, so
    its mean is the mean along H of the means along W). Float32, at full matmul precision."""
    mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], size))
    mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], size))
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum('pw,bhwc->bhpc', mw, x.astype(jnp.float32), precision=hi)
    return jnp.einsum('oh,bhpc->bopc', mh, y, precision=hi).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Conv + BatchNorm + ReLU
# ----------------------------------------------------------------------------------------------

class BatchNorm(nn.Module):
    """PyTorch's BatchNorm2d over NHWC (params `scale`, `bias`; batch_stats `mean`, `var`).

    Training normalises with the batch's mean and biased variance over (B, H, W) and updates the
    running statistics with the unbiased variance, as torch does; evaluation uses the running
    statistics. Statistics and arithmetic in float32, output in `dtype`."""
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(xf, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                n = x.shape[0] * x.shape[1] * x.shape[2]
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class ConvModule(nn.Module):
    """Conv (no bias, 'same' padding for odd kernels) -> BatchNorm -> ReLU: mmcv's `ConvModule`
    and Hugging Face's `UperNetConvModule`. Kaiming-normal (fan_out, ReLU) init, as mmcv's."""
    features: int
    kernel: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.kernel // 2
        x = nn.Conv(self.features, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)), use_bias=False,
                    kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                    dtype=self.dtype, param_dtype=self.param_dtype, name='conv')(x.astype(self.dtype))
        x = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(x, train)
        return nn.relu(x)


def classifier(num_classes: int, dtype: Dtype, param_dtype: Dtype) -> nn.Conv:
    """The 1x1 classifier (mmsegmentation's `conv_seg`): normal(0.01) weight, zero bias."""
    return nn.Conv(num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros,
                   dtype=dtype, param_dtype=param_dtype, name='classifier')


# ----------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------

class UperNetHead(nn.Module):
    """UperNet's decode head on four stage features (strides 4, 8, 16, 32): PPM on the last,
    FPN on all, fused at stride 4, classified. Returns logits at stride 4 in float32."""
    num_classes: int
    channels: int = 512
    pool_scales: Tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def conv(self, kernel: int, name: str) -> ConvModule:
        return ConvModule(features=self.channels, kernel=kernel, dtype=self.dtype, param_dtype=self.param_dtype,
                          name=name)

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
        top = features[-1]
        pooled = [top]
        for i, scale in enumerate(self.pool_scales):
            y = self.conv(1, f'psp_modules_{i}')(adaptive_avg_pool(top, scale), train)
            pooled.append(resize_bilinear(y, top.shape[1:3]))
        laterals = [self.conv(1, f'lateral_convs_{i}')(f, train) for i, f in enumerate(features[:-1])]
        laterals.append(self.conv(3, 'bottleneck')(jnp.concatenate(pooled, axis=-1), train))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + resize_bilinear(laterals[i], laterals[i - 1].shape[1:3])
        outs = [self.conv(3, f'fpn_convs_{i}')(lat, train) for i, lat in enumerate(laterals[:-1])]
        outs.append(laterals[-1])
        size = outs[0].shape[1:3]
        fused = jnp.concatenate([outs[0]] + [resize_bilinear(o, size) for o in outs[1:]], axis=-1)
        x = self.conv(3, 'fpn_bottleneck')(fused, train)
        x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
        return classifier(self.num_classes, self.dtype, self.param_dtype)(x).astype(jnp.float32)


class FCNHead(nn.Module):
    """The auxiliary FCN head (mmsegmentation's `FCNHead`, num_convs=1, concat_input=False):
    a 3x3 conv module, channel dropout, a 1x1 classifier. Returns float32 logits."""
    num_classes: int
    channels: int = 256
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvModule(features=self.channels, kernel=3, dtype=self.dtype, param_dtype=self.param_dtype,
                       name='convs_0')(x, train)
        x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
        return classifier(self.num_classes, self.dtype, self.param_dtype)(x).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

class UperNet(nn.Module):
    """A SwinTransformerV2 backbone (any: V2, V1 through its switches, any window, resolution or
    pretrained windows) with UperNet's decode head and the auxiliary FCN head.

    Attributes:
      backbone: the `SwinTransformerV2` (num_classes=0, four stages); its `features()` are the
        four stage outputs. Its parameters are the subtree `backbone`.
      num_classes: segmentation classes.
      head_channels: channels of the decode head's conv modules (512).
      pool_scales: the pyramid pooling output sizes ((1, 2, 3, 6)).
      aux_channels: channels of the auxiliary FCN head on stage 2 (256); 0: no auxiliary head.
      out_norms: a LayerNorm on each stage output before the heads (`out_norms_{i}`), as Hugging
        Face's `SwinBackbone` (`hidden_states_norms`) and mmsegmentation (`norm0..3`) have;
        Hugging Face's `Swinv2Backbone` has none (False).
      dropout: channel dropout before each classifier in training (mmsegmentation's 0.1).
      dtype, param_dtype: the heads' compute and storage dtypes (the backbone has its own).
    """
    backbone: SwinTransformerV2
    num_classes: int = 150
    head_channels: int = 512
    pool_scales: Tuple[int, ...] = (1, 2, 3, 6)
    aux_channels: int = 256
    out_norms: bool = True
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # -- what the helpers that take any model of this project read (abstract_variables, checks) ----
    @property
    def img_size(self):
        return self.backbone.img_size

    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    @property
    def depths(self):
        return self.backbone.depths   # the trainer's layer-wise lr decay ids (optim.layer_id)

    def config_errors(self) -> list:
        """Every reason the head cannot use this backbone or these settings, as sentences."""
        b, errors = self.backbone, []
        if not isinstance(b, SwinTransformerV2):
            return [f'the backbone must be a SwinTransformerV2, got {type(b).__name__}']
        if b.num_stages != NUM_STAGES:
            errors.append(f'the backbone has {b.num_stages} stages (depths={tuple(b.depths)}); UperNet fuses '
                          f'four (strides 4, 8, 16, 32: the PPM on the last, the auxiliary head on the '
                          f'third), so give it four depths and four num_heads')
        if b.num_classes != 0:
            errors.append(f'the backbone has a {b.num_classes}-class classifier; build it with num_classes=0 '
                          f'(create_model does)')
        if b.use_mask_token:
            errors.append('the backbone has a SimMIM mask token (use_mask_token=True); build it without')
        if self.num_classes < 1:
            errors.append(f'num_classes must be at least 1, got {self.num_classes}')
        if self.head_channels < 1:
            errors.append(f'head_channels must be at least 1, got {self.head_channels}')
        if self.aux_channels < 0:
            errors.append(f'aux_channels must be 0 (no auxiliary head) or positive, got {self.aux_channels}')
        if not self.pool_scales or any(int(s) != s or s < 1 for s in self.pool_scales):
            errors.append(f'pool_scales must be positive ints, e.g. (1, 2, 3, 6), got {self.pool_scales!r}')
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f'dropout must be in [0, 1), got {self.dropout}')
        return errors

    def check_config(self):
        errors = self.config_errors()
        if errors:
            raise ValueError('invalid UperNet: ' + '; '.join(errors) + '.')
        self.backbone.check_config()

    # -- modules ----------------------------------------------------------------------------------
    def setup(self):
        self.check_config()
        if self.out_norms:
            self.norms = [layer_norm(f'out_norms_{i}', dtype=self.backbone.dtype, param_dtype=self.param_dtype)
                          for i in range(NUM_STAGES)]
        self.decode_head = UperNetHead(num_classes=self.num_classes, channels=self.head_channels,
                                       pool_scales=tuple(int(s) for s in self.pool_scales), dropout=self.dropout,
                                       dtype=self.dtype, param_dtype=self.param_dtype)
        if self.aux_channels:
            self.auxiliary_head = FCNHead(num_classes=self.num_classes, channels=self.aux_channels,
                                          dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)

    def features(self, x: jax.Array, train: bool = False) -> list:
        """The four stage outputs [B, H/s, W/s, C_i] (s = 4, 8, 16, 32), normed when out_norms."""
        feats = self.backbone.features(x, train)
        if self.out_norms:
            feats = [norm(f) for norm, f in zip(self.norms, feats)]
        return feats

    def __call__(self, x: jax.Array, train: bool = False):
        feats = self.features(x, train)
        size = x.shape[1:3]
        logits = resize_bilinear(self.decode_head(feats, train), size)
        # init creates the auxiliary head's variables too, so that eval-mode variables train
        if not (self.aux_channels and (train or self.is_initializing())):
            return (logits, None) if train else logits
        aux = resize_bilinear(self.auxiliary_head(feats[AUX_STAGE], train), size)
        return (logits, aux) if train else logits


def auxiliary_logits(model: UperNet, variables, x: jax.Array) -> Optional[jax.Array]:
    """The auxiliary head's logits in evaluation mode (running statistics), or None without one."""
    if not model.aux_channels:
        return None

    def run(m, x):
        return resize_bilinear(m.auxiliary_head(m.features(x)[AUX_STAGE], False), x.shape[1:3])
    return model.apply(variables, x, method=run)
