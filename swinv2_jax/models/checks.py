"""What a `SwinTransformerV2` configuration and its inputs may be, as error sentences and size hints.

Every check names what is wrong and what would work (the nearest image sizes the windows tile, the
layout an array looks like it has), so that a wrong size or option fails at `create_model` or at
the first call with a message a user can act on, not deep inside a reshape. The model keeps thin
methods over these (`model.check_config()`, `model.geometry_errors()`, ...).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from swinv2_jax.models.layers import REMAT_POLICIES


def geometry_errors(model) -> list:
    """Every reason this configuration cannot run, as sentences (empty when it can)."""
    errors = []
    n = model.num_stages
    for field in ('num_heads', 'window_size', 'pretrained_window_sizes'):
        if len(getattr(model, field)) != n:
            errors.append(f'{field} has {len(getattr(model, field))} entries for {n} stages')
    if errors:
        return errors
    for dim, heads, i in zip(model.stage_dims, model.num_heads, range(n)):
        if dim % heads:
            errors.append(f'stage {i}: {dim} channels do not split into {heads} heads')
    h, w = model.img_size
    p = model.patch_size
    if h % p or w % p:
        errors.append(f'img_size {h}x{w} is not a multiple of the patch size {p}')
        return errors
    if not model.strict_img_size:
        return errors  # any map is padded to its window grid and to even sides before merging
    res = (h // p, w // p)
    for i in range(1, n):
        if res[0] % 2 or res[1] % 2:
            errors.append(f'stage {i - 1} feature map {res[0]}x{res[1]} is odd and cannot be '
                          f'merged 2x2 into stage {i}')
            return errors
        res = (res[0] // 2, res[1] // 2)
    for i, (res, (win, _)) in enumerate(zip(model.stage_resolutions, model.stage_windows())):
        if res[0] % win[0] or res[1] % win[1]:
            errors.append(f'stage {i} feature map {res[0]}x{res[1]} is not divisible by its '
                          f'window {win[0]}x{win[1]}')
    return errors


def valid_sizes_near(model, size: int, axis: int = 0, count: int = 2) -> list:
    """The nearest image sides (along `axis`) this configuration accepts, for error messages.

    The rules are per axis (patch size, 2x2 merging, that axis' window), so a side is tested on
    a square image whose windows are this axis' windows: the other side cannot mask it.
    """
    windows = tuple((w[axis], w[axis]) for w in model.window_size)
    found = []
    step = model.patch_size
    for delta in range(0, 64 * step * 2 ** model.num_stages, step):
        for cand in sorted({size - size % step - delta, size - size % step + step + delta}):
            if cand <= 0 or cand in found:
                continue
            probe = model.clone(parent=None, img_size=(cand, cand), window_size=windows)
            if not geometry_errors(probe):
                found.append(cand)
        if len(found) >= count:
            break
    return sorted(found)


def option_errors(model, switches: Mapping[str, Sequence[str]], window_paddings: Sequence[str] = ()) -> list:
    """Every invalid memory switch or ablation switch (`switches`: name -> valid values, SwinV2's
    first, Swin V1's last), as sentences (empty when all are valid)."""
    errors, n = [], model.num_stages
    if model.remat_policy not in REMAT_POLICIES:
        errors.append(f'unknown remat_policy {model.remat_policy!r}; valid: {", ".join(REMAT_POLICIES)}')
    for field in ('sequential_attention', 'sequential_mlp'):
        stages = getattr(model, field)
        if not isinstance(stages, tuple) or not all(isinstance(i, int) for i in stages):
            errors.append(f'{field} must be a tuple of stage indices, got {stages!r}')
        elif any(not 0 <= i < n for i in stages):
            errors.append(f'{field} names stages {list(stages)}, but the stages are 0..{n - 1}')
    for field, unit in (('attention_chunk_size', 'windows'), ('mlp_chunk_tokens', 'tokens')):
        v = getattr(model, field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            errors.append(f'{field} must be an integer >= 1 ({unit} per step), got {v!r}')
    for field, valid in switches.items():
        if getattr(model, field) not in valid:
            errors.append(f'unknown {field} {getattr(model, field)!r}; valid: '
                          f'{", ".join(map(repr, valid))} (the first is SwinV2\'s, the last Swin V1\'s)')
    if window_paddings and model.window_padding not in window_paddings:
        errors.append(f'unknown window_padding {model.window_padding!r}; valid: {", ".join(map(repr, window_paddings))}')
    if not isinstance(model.strict_img_size, bool):
        errors.append(f'strict_img_size must be True or False, got {model.strict_img_size!r}')
    return errors


def check_config(model, switches: Mapping[str, Sequence[str]], window_paddings: Sequence[str] = ()):
    """Raise ValueError with every invalid option, or else every geometry error and the nearest
    image sizes that would work."""
    errors = option_errors(model, switches, window_paddings)
    if errors:
        raise ValueError('invalid SwinTransformerV2 option: ' + '; '.join(errors) + '.')
    errors = geometry_errors(model)
    if errors:
        hints = []
        if len(model.window_size) == model.num_stages:
            for axis in (0, 1):
                near = valid_sizes_near(model, model.img_size[axis], axis)
                if near:
                    hints.append(f'{"height" if axis == 0 else "width"}: {" or ".join(map(str, near))}')
        hint = f' Sizes that work with these windows: {"; ".join(hints)}.' if hints else ''
        raise ValueError(f'SwinTransformerV2 cannot run at img_size={model.img_size[0]}x{model.img_size[1]} '
                         f'with window_size={[tuple(w) for w in model.window_size]}: '
                         + '; '.join(errors) + '.' + hint
                         + ' Pass another img_size or window_size to create_model, or '
                           'strict_img_size=False to pad the feature maps to the windows.')


def check_input(model, x: jax.Array):
    """Raise ValueError, saying how to fix it, for images the model cannot take: not NHWC, the
    wrong channels, integers, or a size other than img_size (strict) or the patch grid (not strict)."""
    if x.ndim != 4:
        raise ValueError(f'expected NHWC images of shape [batch, {model.img_size[0]}, {model.img_size[1]}, '
                         f'{model.in_chans}], got an array of shape {tuple(x.shape)}; add a batch axis '
                         f'with x[None] for a single image')
    if x.shape[-1] != model.in_chans:
        if x.shape[1] == model.in_chans:
            hint = '; it looks like NCHW: transpose with x.transpose(0, 2, 3, 1)'
        else:
            hint = (f'; for grayscale images repeat the channel (jnp.repeat(x, {model.in_chans}, axis=-1)), '
                    f'or build a model for {x.shape[-1]} channels with create_model(name, '
                    f'in_chans={x.shape[-1]}) (its patch embedding is then new and needs training)')
        raise ValueError(f'expected {model.in_chans} channels last (NHWC), got shape {tuple(x.shape)}{hint}')
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f'expected floating-point images, got dtype {x.dtype}; convert with '
                         f'x.astype(jnp.float32) and normalise (ImageNet mean/std) first')
    if not model.strict_img_size:
        p = model.patch_size
        if x.shape[1] % p or x.shape[2] % p:
            fit = lambda n: max(p, n + (-n) % p)  # noqa: E731
            raise ValueError(f'image sides must be multiples of the patch size {p}, got {x.shape[1]}x'
                             f'{x.shape[2]}; pad or resize the images (e.g. zero-pad the bottom/right to '
                             f'{fit(x.shape[1])}x{fit(x.shape[2])}), as timm also requires')
    elif tuple(x.shape[1:3]) != tuple(model.img_size):
        raise ValueError(f'this model was built for {model.img_size[0]}x{model.img_size[1]} images, got '
                         f'{x.shape[1]}x{x.shape[2]}; resize the images, or build the model for this '
                         f'size with create_model(name, img_size=({x.shape[1]}, {x.shape[2]})) and the '
                         f'same weights (the window must divide every stage: see the error it raises), '
                         f'or with strict_img_size=False to take images of any size')
