"""Weights to and from the PyTorch SwinV2 checkpoints: official repo, SimMIM, timm, Hugging Face;
and Swin V1's (`swin_*`: the same layouts; Hugging Face's `Swin*` models under `swin.`).

Each layout is a table of name rules from this project's parameter paths to PyTorch names
(`NAME_RULES`); the array transforms follow from the parameter (Linear [out, in] <-> Dense kernel
[in, out], Conv [O, I, kh, kw] <-> [kh, kw, I, O], the rest copied). Buffers saved by PyTorch
(coords table, relative position index, attention mask) are ignored on load and recomputed; the
official layout writes them back on export because the official model loads with them.

Window and resolution transfer: the CPB modes need nothing; a Swin V1 `relative_position_bias_table`
saved for another window is resized bicubically on load, as the official fine-tuning recipe does
(`swinv2_jax.weights.transfer`); the log says which blocks and how.

torch is only imported to read `.pth`/`.pt`/`.bin` files (`weights_only=True`: no code is
unpickled); `.safetensors` files and in-memory mappings need no torch.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swinv2_jax.models import SwinTransformerV2, abstract_variables
from swinv2_jax.models.swin_transformer_v2 import (relative_coords_table, relative_position_index,
                                                   shifted_window_mask)
from swinv2_jax.weights import transfer
from swinv2_jax.weights.tree_diff import diff_trees

log = logging.getLogger(__name__)

LAYOUTS = ('timm', 'official', 'simmim', 'hf')
EXPORT_LAYOUTS = ('timm', 'official', 'hf', 'simmim')
# Buffers PyTorch saves that are functions of the geometry only: recomputed, never loaded.
IGNORED_BUFFERS = ('relative_coords_table', 'relative_position_index', 'attn_mask')
HF_PREFIXES = ('swinv2.', 'swin.')

Path = Tuple[str, ...]
Rule = Tuple[str, Union[str, Callable[[re.Match], str]]]  # (pattern, replacement), applied with re.sub


# ----------------------------------------------------------------------------------------------
# Name rules: one table per layout, each applied in order to the previous layout's name
# ----------------------------------------------------------------------------------------------

# this project's path, joined with '.' -> timm (timm keeps downsample at the stage start)
TIMM_RULES: List[Rule] = [
    (r'(layers|blocks|cpb_mlp)_(\d+)', r'\1.\2'),           # flax list index -> torch ModuleList index
    (r'extra_norm_(\d+)', r'blocks.\1.extra_norm'),         # SwinV2-H/G only: no PyTorch twin, kept for round trips
    (r'\.(kernel|scale)$', '.weight'),
    (r'^head\.', 'head.fc.'),
]
# timm -> official repo: downsample at the END of the previous stage, `head` without `.fc`
OFFICIAL_RULES: List[Rule] = [
    (r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample'),
    (r'^head\.fc\.', 'head.'),
]
# official -> SimMIM pre-training: the encoder is one attribute of the SimMIM model
SIMMIM_RULES: List[Rule] = [(r'^', 'encoder.')]
# official -> Hugging Face outside the encoder (the prefix, `swinv2.` or `swin.`, is added after)
HF_EMBEDDING_RULES: List[Rule] = [
    (r'^patch_embed\.proj\.', 'embeddings.patch_embeddings.projection.'),
    (r'^patch_embed\.norm\.', 'embeddings.norm.'),
    (r'^norm\.', 'layernorm.'),
]
# official -> Hugging Face inside the encoder (`encoder.` prepended first); V2 and V1 share them
HF_BLOCK_RULES: List[Rule] = [
    (r'attn\.q_bias$', 'attention.self.query.bias'),
    (r'attn\.v_bias$', 'attention.self.value.bias'),
    (r'attn\.logit_scale$', 'attention.self.logit_scale'),
    (r'attn\.cpb_mlp\.', 'attention.self.continuous_position_bias_mlp.'),
    (r'attn\.relative_position_bias_table$', 'attention.self.relative_position_bias_table'),  # V1
    (r'attn\.proj\.', 'attention.output.dense.'),
    (r'norm1\.', 'layernorm_before.'),
    (r'norm2\.', 'layernorm_after.'),
    (r'mlp\.fc1\.', 'intermediate.dense.'),
    (r'mlp\.fc2\.', 'output.dense.'),
]
HF_QKV = ('query', 'key', 'value')  # the fused qkv kernel (and V1's qkv bias) is three Linears there

# Names as read, canonicalised before the tables above apply.
# Older SimMIM checkpoints call the CPB meta network `rpe_mlp`.
SIMMIM_ALIASES: List[Rule] = [(r'\.rpe_mlp\.', '.cpb_mlp.')]
# transformers >= 5 renames Swin V1's modules in memory (its `conversion_mapping.py` maps the hub
# names onto these on load): its state dicts are read through this table back to the hub names.
HF_V1_IN_MEMORY: List[Rule] = [
    (r'\.attention\.q_proj\.', '.attention.self.query.'),
    (r'\.attention\.k_proj\.', '.attention.self.key.'),
    (r'\.attention\.v_proj\.', '.attention.self.value.'),
    (r'\.attention\.relative_position_bias\.relative_position_bias_table$',
     '.attention.self.relative_position_bias_table'),
    (r'\.attention\.relative_position_bias\.relative_position_index$', '.attention.self.relative_position_index'),
    (r'\.attention\.o_proj\.', '.attention.output.dense.'),
    (r'(\.blocks\.\d+)\.mlp\.fc1\.', r'\1.intermediate.dense.'),
    (r'(\.blocks\.\d+)\.mlp\.fc2\.', r'\1.output.dense.'),
]
ALIASES_ON_LOAD: Dict[str, List[Rule]] = {'simmim': SIMMIM_ALIASES, 'hf': HF_V1_IN_MEMORY}


def _apply(rules: Sequence[Rule], name: str) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def _timm_name(path: Path) -> str:
    return _apply(TIMM_RULES, '.'.join(path))


def _official_name(path: Path) -> str:
    return _apply(OFFICIAL_RULES, _timm_name(path))


def _hf_names(path: Path, prefix: str) -> List[str]:
    name = _official_name(path)
    if name.startswith('head.'):
        return ['classifier.' + name[len('head.'):]]  # beside the backbone, never prefixed
    outside = _apply(HF_EMBEDDING_RULES, name)
    if outside != name:
        return [prefix + outside]
    name = 'encoder.' + name
    if name.endswith(('attn.qkv.weight', 'attn.qkv.bias')):
        stem, leaf = name.rsplit('.', 1)
        stem = stem[:-len('attn.qkv')] + 'attention.self.'
        return [f'{prefix}{stem}{part}.{leaf}' for part in HF_QKV]
    return [prefix + _apply(HF_BLOCK_RULES, name)]


# layout -> (path, Hugging Face prefix) -> PyTorch name(s)
NAME_RULES: Dict[str, Callable[[Path, str], List[str]]] = {
    'timm': lambda path, prefix: [_timm_name(path)],
    'official': lambda path, prefix: [_official_name(path)],
    'simmim': lambda path, prefix: [_apply(SIMMIM_RULES, _official_name(path))],
    'hf': _hf_names,
}


def torch_names(path: Path, layout: str, hf_prefix: str = 'swinv2.') -> List[str]:
    """The PyTorch key(s) of one parameter in a layout."""
    if layout not in NAME_RULES:
        raise ValueError(f'unknown layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')
    return NAME_RULES[layout](path, hf_prefix)


def hf_prefix(model: SwinTransformerV2) -> str:
    """`swin.` (Hugging Face `Swin*` classes) for Swin V1, `swinv2.` (`Swinv2*`) otherwise."""
    return 'swin.' if model.is_swin_v1 else 'swinv2.'


# ----------------------------------------------------------------------------------------------
# Array transforms (they follow from the parameter, not the layout)
# ----------------------------------------------------------------------------------------------

def _to_flax(path: Path, arrays: List[np.ndarray]) -> np.ndarray:
    leaf = path[-1]
    if len(arrays) > 1:  # Hugging Face query/key/value -> fused qkv
        return np.concatenate(arrays, axis=0).T
    a = arrays[0]
    if leaf == 'kernel' and a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if leaf == 'kernel' and a.ndim == 2:
        return a.T
    return a


def _to_torch(path: Path, a: np.ndarray, n: int) -> List[np.ndarray]:
    leaf = path[-1]
    if n > 1:
        return list(np.split(a.T, n, axis=0))
    if leaf == 'kernel' and a.ndim == 4:
        return [a.transpose(3, 2, 0, 1)]
    if leaf == 'kernel' and a.ndim == 2:
        return [a.T]
    return [a]


def _torch_shapes(path: Path, shape: Tuple[int, ...], n: int) -> List[Tuple[int, ...]]:
    placeholder = np.broadcast_to(np.zeros((), np.bool_), shape)  # no memory, whatever the shape
    return [part.shape for part in _to_torch(path, placeholder, n)]


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

def _to_numpy(v) -> np.ndarray:
    if hasattr(v, 'detach'):  # a torch tensor; bf16/fp16 have no numpy twin of their own
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()
        return v.numpy()
    return np.asarray(v)


def _read_file(path: str) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f'no checkpoint at {path}')
    if path.endswith('.safetensors'):
        from safetensors.numpy import load_file
        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f'{path} is not a readable .safetensors file ({e}); is the download '
                             f'complete?') from e
    try:
        import torch
    except ImportError as e:
        raise ImportError(f'reading {path} needs PyTorch (pip install torch), or convert it to '
                          f'.safetensors first') from e
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        reason = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()[0]  # torch's text is long and coloured
        raise ValueError(f'cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {reason}); '
                         f'the file is corrupt or truncated, or holds pickled code that '
                         f'weights_only=True refuses to run') from e


def read_state_dict(src) -> Dict[str, np.ndarray]:
    """A flat name -> numpy array mapping from a file (.pth/.pt/.bin/.safetensors) or a mapping.

    Unwraps the `{"model": ...}` / `{"state_dict": ...}` / `{"module": ...}` wrappers of training
    checkpoints. `.pth` files are read with `torch.load(weights_only=True)`.
    """
    sd = _read_file(os.fspath(src)) if isinstance(src, (str, os.PathLike)) else src
    if not isinstance(sd, Mapping):
        raise ValueError(f'expected a state dict (a mapping of names to arrays), got {type(sd).__name__}')
    for wrapper in ('model', 'state_dict', 'module'):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    return {k: _to_numpy(v) for k, v in sd.items() if not isinstance(v, (int, float, str))}


def detect_layout(keys) -> Tuple[str, str]:
    """(layout, Hugging Face prefix) of a state dict's keys."""
    keys = list(keys)
    for prefix in HF_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return 'hf', prefix
    if any(k.startswith('embeddings.patch_embeddings') for k in keys):
        return 'hf', ''
    if any(k.startswith('encoder.patch_embed.') for k in keys):
        return 'simmim', ''
    # Official checkpoints merge at the end of stages 0-2, timm at the start of stages 1-3 (timm's
    # own test; the head cannot tell them apart, it is absent in headless checkpoints).
    if 'layers.0.downsample.reduction.weight' in keys:
        return 'official', ''
    if any(k.startswith('patch_embed.') for k in keys):
        return 'timm', ''
    raise ValueError('cannot tell the layout of this state dict: none of the official, SimMIM, timm or '
                     f'Hugging Face Swin V1/V2 names are in it (first keys: {keys[:5]})')


def resolve_layout(keys, layout: Optional[str] = None) -> Tuple[str, str]:
    """(layout, Hugging Face prefix): `layout` checked, or detected from the keys when None."""
    keys = list(keys)
    if layout is None:
        return detect_layout(keys)
    if layout not in LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')
    if layout == 'hf':  # a headless Hugging Face model (Swinv2Model) saves without a prefix
        return layout, next((p for p in HF_PREFIXES if any(k.startswith(p) for k in keys)), '')
    return layout, 'swinv2.'


def _is_ignored(key: str, layout: str, model: SwinTransformerV2) -> bool:
    """Names a checkpoint may hold that the model does not load (not 'unexpected')."""
    if key.endswith(IGNORED_BUFFERS) or key.endswith('num_batches_tracked'):
        return True
    if layout == 'simmim' and not key.startswith('encoder.'):
        return True  # the SimMIM decoder: not part of the encoder
    if layout == 'hf' and key.startswith('decoder.'):
        return True  # Swinv2ForMaskedImageModeling's decoder (weights.simmim loads it)
    if key in ('encoder.mask_token', 'swinv2.embeddings.mask_token', 'swin.embeddings.mask_token',
               'embeddings.mask_token'):
        return True  # SimMIM's mask token, used in pre-training only
    if model.num_classes == 0 and key.startswith(('head.', 'classifier.')):
        return True  # a headless model drops the classifier
    return False


def _resize_tables(sd: Dict[str, np.ndarray], model: SwinTransformerV2,
                   names: Mapping[Path, List[str]]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """`sd` with each V1 position bias table saved for another window resized to the model's."""
    table_names = {path: names[path][0] for path in transfer.table_windows(model) if path in names}
    tables = {path: sd[n] for path, n in table_names.items() if n in sd}
    resized, lines = transfer.resize_tables(tables, model)
    return {**sd, **{table_names[path]: t for path, t in resized.items()}}, lines


def _check_names_and_shapes(sd: Mapping[str, np.ndarray], model: SwinTransformerV2, layout: str,
                            expected: Mapping[Path, Any], names: Mapping[Path, List[str]]) -> None:
    """Raises ValueError listing every missing, unexpected and mis-shaped key at once."""
    want = {name: jax.ShapeDtypeStruct(shape, spec.dtype)
            for path, spec in expected.items()
            for name, shape in zip(names[path], _torch_shapes(path, spec.shape, len(names[path])))}
    diff = diff_trees(want, sd, ignore=lambda k: _is_ignored(k, layout, model),
                      given_word='checkpoint', expected_word='model')
    if not diff:
        return
    hints = []
    head_bias = names.get(('head', 'bias'), [''])[0]
    if any(m.startswith(head_bias + ':') for m in diff.misshaped):
        classes = sd[head_bias].shape[0]
        hints.append(f'the classifier differs: the checkpoint has {classes} classes; pass '
                     f'num_classes={classes} to create_model, or num_classes=0 to drop the head')
    if diff.missing or diff.unexpected or any(not m.startswith(('head', 'classifier')) for m in diff.misshaped):
        hints.append('check that the model name matches the checkpoint (list_models()), and that '
                     'the layout (detected or given) is right')
    raise ValueError(diff.message(f'the {layout}-layout checkpoint does not match the model '
                                  f'(embed_dim={model.embed_dim}, depths={model.depths}, '
                                  f'num_classes={model.num_classes})', hints))


def load_torch_weights(src, model: SwinTransformerV2, layout: Optional[str] = None) -> Dict[str, Any]:
    """Variables `{"params": ...}` for `model` from a PyTorch SwinV2 state dict.

    Args:
      src: a path (`.pth`/`.pt`/`.bin` via `torch.load(weights_only=True)`, or `.safetensors`) or a
        mapping of names to arrays (torch tensors or numpy).
      model: the `SwinTransformerV2` the weights are for (its img_size and windows may differ from
        the checkpoint's: the CPB modes take any coordinates; a V1 position bias table saved for
        another window is resized bicubically, its source window taken as square, as the official
        recipe does; both are logged).
      layout: 'official', 'simmim', 'timm' or 'hf'; detected from the names when None.

    Raises:
      ValueError listing every missing, unexpected and mis-shaped key at once.
    """
    if not isinstance(model, SwinTransformerV2):
        raise TypeError(f'torch_layouts reads SwinTransformerV2 checkpoints; for a {type(model).__name__} '
                        f'use swinv2_jax.load_torch_weights')
    sd = read_state_dict(src)
    layout, prefix = resolve_layout(sd, layout)
    aliases = ALIASES_ON_LOAD.get(layout, [])
    if aliases:
        sd = {_apply(aliases, k): v for k, v in sd.items()}
    expected = traverse_util.flatten_dict(abstract_variables(model)['params'])
    names = {path: torch_names(path, layout, prefix) for path in expected}
    sd, transfer_log = _resize_tables(sd, model, names)
    _check_names_and_shapes(sd, model, layout, expected, names)
    params = {path: jnp.asarray(_to_flax(path, [sd[n] for n in names[path]]), dtype=spec.dtype)
              for path, spec in expected.items()}
    log.info('loaded %d %s-layout tensors into %s', sum(map(len, names.values())), layout,
             type(model).__name__)
    for line in transfer_log:
        log.info('%s', line)
    return {'params': traverse_util.unflatten_dict(params)}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

def _official_buffers(model: SwinTransformerV2) -> Dict[str, np.ndarray]:
    """The buffers the official model registers (persistent) and so expects in a strict load."""
    out = {}
    for i, (res, (window, shift)) in enumerate(zip(model.stage_resolutions, model.stage_windows())):
        pretrained = tuple(model.pretrained_window_sizes[i])
        for j in range(model.depths[i]):
            block_shift = shift if j % 2 else (0, 0)
            stem = f'layers.{i}.blocks.{j}.'
            if model.position_bias != 'table':
                out[stem + 'attn.relative_coords_table'] = relative_coords_table(
                    window, pretrained, log_spaced=model.position_bias == 'log_cpb')[None]
            out[stem + 'attn.relative_position_index'] = relative_position_index(window).astype(np.int64)
            mask = shifted_window_mask(res, window, block_shift)
            if mask is not None:
                out[stem + 'attn_mask'] = mask
    return out


def export_torch_weights(variables: Mapping[str, Any], model: SwinTransformerV2,
                         layout: str = 'timm') -> Dict[str, np.ndarray]:
    """A PyTorch state dict (name -> numpy array) for `layout` in {'timm', 'official', 'hf'}.

    timm's `SwinTransformerV2`, the official `SwinTransformerV2` and Hugging Face's
    `Swinv2ForImageClassification` (`Swinv2Model` when num_classes=0 ... with the `swinv2.` prefix
    stripped by the caller) load it with `strict=True` (wrap each value with `torch.from_numpy`).
    Works on any pytree shaped like the params (e.g. gradients).
    SwinV2-H/G's extra norms have no PyTorch implementation to load into; they are written as
    `layers.{i}.blocks.{j}.extra_norm.*` so that a round trip keeps them.
    Swin V1 models (`swin_*`) give the state dicts of timm's and the official `SwinTransformer`, and
    in the hf layout the hub files' names under `swin.` (`SwinForImageClassification.from_pretrained`
    reads them; transformers >= 5 renames them in memory).
    """
    if layout not in EXPORT_LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}; valid layouts: {", ".join(EXPORT_LAYOUTS)}')
    params = variables.get('params', variables)
    out: Dict[str, np.ndarray] = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        names = torch_names(path, layout, hf_prefix(model))
        for name, array in zip(names, _to_torch(path, np.asarray(value, dtype=np.float32), len(names))):
            out[name] = np.ascontiguousarray(array)
    if layout in ('official', 'simmim'):
        prefix = 'encoder.' if layout == 'simmim' else ''
        out.update({prefix + k: v for k, v in _official_buffers(model).items()})
    return out


__all__ = ['EXPORT_LAYOUTS', 'HF_PREFIXES', 'IGNORED_BUFFERS', 'LAYOUTS', 'NAME_RULES', 'detect_layout',
           'export_torch_weights', 'hf_prefix', 'load_torch_weights', 'read_state_dict', 'resolve_layout',
           'torch_names']
