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

from swinv2_jax.models.layers import ATTENTION_IMPLS, REMAT_POLICIES

CUDNN_DTYPES = ('bfloat16', 'float16')  # what jax's cuDNN attention takes (fp8 aside)


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


def heads_that_fit(model) -> tuple:
    """The head counts nearest to `num_heads` that divide each stage's channels."""
    out = []
    for dim, heads in zip(model.stage_dims, model.num_heads):
        out.append(min((h for h in range(1, dim + 1) if dim % h == 0), key=lambda h: (abs(h - heads), -h)))
    return tuple(out)


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
    return errors + attention_impl_errors(model)


def attention_impl_errors(model) -> list:
    """Why `model.attention_impl` cannot run this configuration here, as sentences."""
    impl = model.attention_impl
    if impl not in ATTENTION_IMPLS:
        return [f'unknown attention_impl {impl!r}; valid: {", ".join(map(repr, ATTENTION_IMPLS))}']
    errors = []
    if impl != 'default' and model.attn_drop_rate > 0:
        errors.append(f'attention_impl {impl!r} has no attention dropout (jax.nn.dot_product_attention '
                      f'takes none), got attn_drop_rate={model.attn_drop_rate}; use attn_drop_rate=0 or '
                      f'attention_impl=\'default\'')
    if impl == 'cudnn' and len(model.num_heads) == model.num_stages:
        # The device is checked when the attention is traced, not here: a model trained with cuDNN
        # must still be buildable on a CPU host, e.g. to read its checkpoint.
        errors += cudnn_errors(backend=None, dtype=model.dtype,
                               head_dims=[d // h for d, h in zip(model.stage_dims, model.num_heads)])
    return errors


def cuda_backend():
    """(platform, compute capability or None) of JAX's default device: ('cuda', (9, 0)), ('cpu', None)."""
    device = jax.devices()[0]
    if device.platform == 'gpu' and 'cuda' in device.client.platform_version.lower():
        return 'cuda', tuple(int(v) for v in str(device.compute_capability).split('.'))
    return device.platform, None


def cudnn_errors(*, backend, dtype, head_dims=(), tokens=(), training: bool = False) -> list:
    """Why jax's cuDNN fused attention (`attention_impl='cudnn'`) cannot run, as sentences: the
    constraints `jax._src.cudnn.fused_attention_stablehlo` enforces (check_layout,
    check_is_flash_attention), checked up front on shapes and dtypes so that they name the fix.
    backend: `cuda_backend()`'s (platform, compute capability), or None to leave the device
    unchecked (head dims then get Hopper's limit); tokens: tokens per window."""
    errors = []
    platform, capability = backend or ('cuda', None)
    if platform != 'cuda':
        errors.append(f"attention_impl='cudnn' needs an NVIDIA GPU with cuDNN, but JAX's default backend "
                      f"is {platform!r}; use attention_impl='dot_product_attention' (JAX picks the "
                      f"implementation) or 'default' (the parameters are the same: "
                      f"model.clone(attention_impl='default') runs a cuDNN-trained model's weights)")
    if jnp.dtype(dtype).name not in CUDNN_DTYPES:
        errors.append(f"attention_impl='cudnn' needs a bfloat16 or float16 compute dtype, got "
                      f"{jnp.dtype(dtype).name}; pass dtype='bfloat16'")
    max_dim = 256 if capability is None or capability >= (9, 0) else 128
    bad = sorted({d for d in head_dims if d % 8 or d > max_dim})
    if bad:
        errors.append(f"attention_impl='cudnn' needs a head dimension that is a multiple of 8 and at most "
                      f"{max_dim} (256 from Hopper on, 128 before), got {bad}; change embed_dim or num_heads")
    odd = sorted({n for n in tokens if n % 2})
    if training and odd:
        errors.append(f"attention_impl='cudnn' trains (with the position bias) only on an even number of "
                      f"tokens per window, got {odd} (e.g. window 7: 49 tokens); use an even window "
                      f"(e.g. window_size=8) or attention_impl='dot_product_attention'")
    return errors


def raise_cudnn_errors(*, dtype, head_dims, tokens, training: bool):
    """Raise ValueError naming every unmet cuDNN attention requirement (at the attention's trace)."""
    errors = cudnn_errors(backend=cuda_backend(), dtype=dtype, head_dims=head_dims, tokens=tokens,
                          training=training)
    if errors:
        raise ValueError('; '.join(errors) + '.')


def check_config(model, switches: Mapping[str, Sequence[str]], window_paddings: Sequence[str] = ()):
    """Raise ValueError with every invalid option, or else every geometry error and the nearest
    image sizes that would work."""
    errors = option_errors(model, switches, window_paddings)
    if errors:
        raise ValueError('invalid SwinTransformerV2 option: ' + '; '.join(errors) + '.')
    errors = geometry_errors(model)
    if errors and all('heads' in e for e in errors):
        dims = list(model.stage_dims)
        raise ValueError(f'SwinTransformerV2 with embed_dim={model.embed_dim} (stage channels {dims}) '
                         f'cannot use num_heads={tuple(model.num_heads)}: ' + '; '.join(errors) + '. '
                         f'Change num_heads (e.g. num_heads={heads_that_fit(model)}) or embed_dim so that '
                         f'every stage\'s channels divide by its heads; the image and window sizes are fine.')
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
