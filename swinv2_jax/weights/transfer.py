"""Window and resolution transfer of parameters: Swin V1's position bias table, resized bicubically.

The continuous position bias modes ('log_cpb', 'linear_cpb') need nothing: the meta network takes
the coordinates of any window. The V1 'table' mode stores one bias per relative offset,
[(2Wh-1)*(2Ww-1), heads] per block; loading it into another window resizes it as the official
Swin fine-tuning recipe does (`utils.load_pretrained` in microsoft/Swin-Transformer:
`torch.nn.functional.interpolate(..., mode='bicubic')`, align_corners=False, Keys' a = -0.75;
`jax.image.resize` uses a = -0.5, so the resize is written out here to match torch).

timm resizes differently (`timm.layers.resize_rel_pos_bias_table`: BEiT's geometric-progression
grid with linear interpolation); this follows the official bicubic recipe, which the released
Swin V1 fine-tunes were made with.

Used by the PyTorch loader, the converted-checkpoint loader (`load_converted(dir, model=...)`) and
the training `init_from`, all through `resize_tables`; the resize itself is numpy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models import UperNet, abstract_variables
from swinv2_jax.weights.tree_diff import diff_trees

Pair = Tuple[int, int]
Path = Tuple[str, ...]
TABLE = 'relative_position_bias_table'
CUBIC_A = -0.75  # PyTorch's bicubic coefficient


def _cubic_weights(t: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fractions t: [n, 4]."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of torch's 1-D bicubic resize (align_corners=False, edges clamped)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5  # not clamped at 0 for cubic
    base = np.floor(src)
    w = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in), np.float64)
    for tap in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + tap, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), w[:, tap])
    return m


def bicubic_resize(x: np.ndarray, size: Pair) -> np.ndarray:
    """[H, W, ...] -> [size[0], size[1], ...], as torch's F.interpolate(mode='bicubic') on [.., H, W]."""
    x = np.asarray(x, np.float64)
    mh, mw = bicubic_matrix(x.shape[0], size[0]), bicubic_matrix(x.shape[1], size[1])
    return np.einsum('ah,bw,hw...->ab...', mh, mw, x)


def table_window(num_offsets: int) -> Pair:
    """The square window of a flat [(2W-1)**2, heads] table (the official recipe's assumption)."""
    side = math.isqrt(num_offsets)
    if side * side != num_offsets or side % 2 == 0:
        raise ValueError(f'a position bias table of {num_offsets} offsets is not (2W-1)**2 for a square '
                         f'window W; pass the source window size to resize it')
    return ((side + 1) // 2, (side + 1) // 2)


def resize_bias_table(table: np.ndarray, src_window: Pair, dst_window: Pair) -> np.ndarray:
    """[(2sh-1)(2sw-1), heads] -> [(2dh-1)(2dw-1), heads], bicubic over the offset grid."""
    table = np.asarray(table)
    heads = table.shape[-1]
    grid = table.reshape(2 * src_window[0] - 1, 2 * src_window[1] - 1, heads)
    out = bicubic_resize(grid, (2 * dst_window[0] - 1, 2 * dst_window[1] - 1))
    return out.reshape(-1, heads).astype(table.dtype)


def _backbone(model) -> Tuple[Any, Path]:
    """(the SwinTransformerV2, the path of its parameters): a segmentation model's backbone."""
    return (model.backbone, ('backbone',)) if isinstance(model, UperNet) else (model, ())


def table_windows(model) -> Dict[Path, Pair]:
    """Path of every position bias table leaf of `model` -> the window its block uses."""
    model, prefix = _backbone(model)
    if getattr(model, 'position_bias', None) != 'table':
        return {}
    out = {}
    for i, (window, _) in enumerate(model.stage_windows()):
        for j in range(model.depths[i]):
            out[prefix + (f'layers_{i}', f'blocks_{j}', 'attn', TABLE)] = tuple(window)
    return out


def transfer_tables(source: Mapping[Path, np.ndarray], target_shapes: Mapping[Path, Tuple[int, ...]],
                    target_windows: Mapping[Path, Pair],
                    source_windows: Optional[Mapping[Path, Pair]] = None) -> Tuple[Dict[Path, np.ndarray], List[str]]:
    """Resize every source table whose offset count differs from the target's (same head count).

    Args:
      source: flat source params (path -> array); only table leaves are looked at.
      target_shapes: flat target shapes; target_windows: the target window of each table path.
      source_windows: the source window of each table path where known; else inferred (square).
    Returns:
      (the resized tables by path, log lines saying what was resized and how).
    """
    resized, moves = {}, {}
    for path, dst in target_windows.items():
        src = source.get(path)
        if src is None or path not in target_shapes:
            continue
        want = tuple(target_shapes[path])
        if tuple(np.shape(src)) == want:
            continue
        if np.shape(src)[-1] != want[-1]:
            continue  # another head count: left for the caller's shape check to report
        src_window = (source_windows or {}).get(path) or table_window(np.shape(src)[0])
        resized[path] = resize_bias_table(np.asarray(src), src_window, dst)
        moves.setdefault((tuple(src_window), tuple(dst)), []).append('/'.join(path[:2]))
    lines = [f'resized the position bias table of {len(blocks)} block(s) bicubically (torch bicubic, '
             f'align_corners=False) from window {s[0]}x{s[1]} ({2 * s[0] - 1}x{2 * s[1] - 1} offsets) to '
             f'{d[0]}x{d[1]} ({2 * d[0] - 1}x{2 * d[1] - 1}): {", ".join(blocks)}'
             for (s, d), blocks in moves.items()]
    return resized, lines


def table_shapes(model) -> Dict[Path, Tuple[int, int]]:
    """Path of every position bias table leaf of `model` -> its shape [(2Wh-1)(2Ww-1), heads]."""
    heads = _backbone(model)[0].num_heads
    return {path: ((2 * w[0] - 1) * (2 * w[1] - 1), heads[int(path[-4].split('_')[1])])
            for path, w in table_windows(model).items()}


def resize_tables(params: Mapping[Path, Any], model,
                  source_windows: Optional[Mapping[Path, Pair]] = None) -> Tuple[Dict[Path, Any], List[str]]:
    """Flat params (path -> array) with each V1 position bias table resized to `model`'s windows.

    The one table resize of the package: the PyTorch loader, `load_converted(dir, model=...)`,
    `transfer_params` and `init_from` all come through here. A no-op (the params as given) for the
    continuous position bias modes. Returns (params, log lines saying what was resized and how).
    """
    resized, lines = transfer_tables(params, table_shapes(model), table_windows(model), source_windows)
    if not resized:
        return dict(params), lines
    return {**params, **resized}, lines


def transfer_params(params: Mapping, source_model, target_model) -> Tuple[Dict, List[str]]:
    """`params` of `source_model` for `target_model`, which may differ in img_size, windows,
    pretrained windows, strict_img_size and the memory switches, not in the parameters themselves.

    CPB parameters carry over unchanged (the meta network takes any coordinates); V1 tables are
    resized to the target's windows. Returns (params, log lines).
    Raises ValueError listing every leaf that is missing, unexpected or mis-shaped otherwise.
    """
    flat, lines = resize_tables(traverse_util.flatten_dict(unfreeze(params)), target_model,
                                table_windows(source_model))
    lines += cpb_transfer_notes(source_model, target_model)
    want = traverse_util.flatten_dict(abstract_variables(target_model)['params'])
    diff = diff_trees(want, flat, given_word='source', expected_word='model')
    if diff:
        raise ValueError(diff.message(
            'the parameters do not transfer to the target model (only img_size, window sizes and switches '
            'that own no parameters may differ)',
            ['missing: in the target model, not in the source; unexpected: in the source, not in the target model']))
    out = {p: jnp.asarray(v, dtype=want[p].dtype) for p, v in flat.items()}
    return traverse_util.unflatten_dict(out), lines


def cpb_transfer_notes(source_model, target_model) -> List[str]:
    """Log lines for CPB models moved to other windows: nothing is resized; say what normalises the
    coordinates, and flag the likely mistake of leaving pretrained_window_sizes unset."""
    (source_model, _), (target_model, _) = _backbone(source_model), _backbone(target_model)
    if getattr(target_model, 'position_bias', 'table') == 'table':
        return []
    src = [w for w, _ in source_model.stage_windows()]
    dst = [w for w, _ in target_model.stage_windows()]
    if src == dst:
        return []
    pretrained = [tuple(p) for p in target_model.pretrained_window_sizes]
    lines = [f'continuous position bias carried over unchanged from windows {src} to {dst}; its '
             f'coordinates are normalised by pretrained_window_sizes {pretrained} (0: by the new window)']
    if not any(any(p) for p in pretrained):
        lines.append(f'pretrained_window_sizes is unset: the coordinates are normalised by the new windows, '
                     f'not the source\'s {src}; pass pretrained_window_sizes={[w[0] for w in src]} to keep '
                     f'the meaning of the pre-trained bias (as the released fine-tuned models do)')
    return lines
