"""Weights to and from the PyTorch SwinV2 checkpoints: official repo, SimMIM, timm, Hugging Face;
and Swin V1's (`swin_*`: the same layouts; Hugging Face's `Swin*` models under `swin.`).

Each layout is a table of name rules from this project's parameter paths to PyTorch names; the
array transforms follow from the parameter (Linear [out, in] <-> Dense kernel [in, out], Conv
[O, I, kh, kw] <-> [kh, kw, I, O], the rest copied). Buffers saved by PyTorch (coords table,
relative position index, attention mask) are ignored on load and recomputed; the official layout
writes them back on export because the official model loads with them.

Window and resolution transfer: the CPB modes need nothing; a Swin V1 `relative_position_bias_table`
saved for another window is resized bicubically on load, as the official fine-tuning recipe does
(`swinv2_jax.weights.transfer`); the log says which blocks and how.

torch is only imported to read `.pth`/`.pt`/`.bin` files (`weights_only=True`: no code is
unpickled); `.safetensors` files and in-memory mappings need no torch.

Command line:
  python -m swinv2_jax.convert SRC --model NAME --out DIR        # PyTorch -> Orbax + config
  python -m swinv2_jax.convert DIR --to-torch --layout timm --out F.safetensors
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swinv2_jax.weights import transfer
from swinv2_jax.models.swin_transformer_v2 import (SwinTransformerV2, abstract_variables, relative_coords_table,
                                                   relative_position_index, shifted_window_mask)

log = logging.getLogger(__name__)

LAYOUTS = ('timm', 'official', 'simmim', 'hf')
# Buffers PyTorch saves that are functions of the geometry only: recomputed, never loaded.
IGNORED_BUFFERS = ('relative_coords_table', 'relative_position_index', 'attn_mask')

Path = Tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# Name rules
# ----------------------------------------------------------------------------------------------

def _timm_name(path: Path) -> str:
    """This project's parameter path -> timm's name (timm keeps downsample at the stage start)."""
    name = '.'.join(path)
    name = re.sub(r'(layers|blocks|cpb_mlp)_(\d+)', r'\1.\2', name)
    name = re.sub(r'extra_norm_(\d+)', r'blocks.\1.extra_norm', name)  # SwinV2-H/G only; see below
    name = re.sub(r'\.(kernel|scale)$', '.weight', name)
    if name.startswith('head.'):
        name = 'head.fc.' + name[len('head.'):]
    return name


def _official_name(path: Path) -> str:
    """Official repo: downsample at the END of the previous stage, `head` without `.fc`."""
    name = _timm_name(path)
    name = re.sub(r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample', name)
    return name.replace('head.fc.', 'head.')


_HF_BLOCK = [  # official/timm block suffix -> Hugging Face suffix
    (r'attn\.q_bias$', 'attention.self.query.bias'),
    (r'attn\.v_bias$', 'attention.self.value.bias'),
    (r'attn\.logit_scale$', 'attention.self.logit_scale'),
    (r'attn\.cpb_mlp\.', 'attention.self.continuous_position_bias_mlp.'),
    (r'attn\.proj\.', 'attention.output.dense.'),
    (r'norm1\.', 'layernorm_before.'),
    (r'norm2\.', 'layernorm_after.'),
    (r'mlp\.fc1\.', 'intermediate.dense.'),
    (r'mlp\.fc2\.', 'output.dense.'),
]


# Swin V1 in Hugging Face (`SwinModel`, `SwinForImageClassification`): the hub files' names. The
# block names above are shared; these are V1's own parameters.
_HF_V1_BLOCK = [
    (r'attn\.relative_position_bias_table$', 'attention.self.relative_position_bias_table'),
]
# transformers >= 5 renames Swin V1's modules in memory (its `conversion_mapping.py` maps the hub
# names onto these on load): its state dicts are read through this table back to the hub names.
_HF_V1_IN_MEMORY = [
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
HF_PREFIXES = ('swinv2.', 'swin.')


def hf_prefix(model: SwinTransformerV2) -> str:
    """`swin.` (Hugging Face `Swin*` classes) for Swin V1, `swinv2.` (`Swinv2*`) otherwise."""
    return 'swin.' if model.is_swin_v1 else 'swinv2.'


def _canonical_hf_v1(sd: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        for pattern, repl in _HF_V1_IN_MEMORY:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def _hf_names(path: Path, prefix: str) -> List[str]:
    """Hugging Face names (a list: the fused qkv kernel, and V1's qkv bias, are three there)."""
    name = _official_name(path)
    if name.startswith('head.'):
        return ['classifier.' + name[len('head.'):]]
    if name.startswith('patch_embed.proj.'):
        name = name.replace('patch_embed.proj.', 'embeddings.patch_embeddings.projection.')
    elif name.startswith('patch_embed.norm.'):
        name = name.replace('patch_embed.norm.', 'embeddings.norm.')
    elif name.startswith('norm.'):
        name = 'layernorm.' + name[len('norm.'):]
    else:
        name = 'encoder.' + name
        if name.endswith(('attn.qkv.weight', 'attn.qkv.bias')):
            stem, leaf = name.rsplit('.', 1)
            stem = stem[:-len('attn.qkv')] + 'attention.self.'
            return [prefix + stem + p + '.' + leaf for p in ('query', 'key', 'value')]
        for pattern, repl in _HF_BLOCK + _HF_V1_BLOCK:
            name = re.sub(pattern, repl, name)
    return [prefix + name]


def torch_names(path: Path, layout: str, hf_prefix: str = 'swinv2.') -> List[str]:
    """The PyTorch key(s) of one parameter in a layout."""
    if layout == 'timm':
        return [_timm_name(path)]
    if layout == 'official':
        return [_official_name(path)]
    if layout == 'simmim':
        return ['encoder.' + _official_name(path)]
    if layout == 'hf':
        return _hf_names(path, hf_prefix)
    raise ValueError(f'unknown layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')


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


def _torch_shape(path: Path, shape: Tuple[int, ...], n: int) -> Tuple[int, ...]:
    return _to_torch(path, np.empty(shape, np.bool_), n)[0].shape


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


def read_state_dict(src) -> Dict[str, np.ndarray]:
    """A flat name -> numpy array mapping from a file (.pth/.pt/.bin/.safetensors) or a mapping.

    Unwraps the `{"model": ...}` / `{"state_dict": ...}` / `{"module": ...}` wrappers of training
    checkpoints. `.pth` files are read with `torch.load(weights_only=True)`.
    """
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise FileNotFoundError(f'no checkpoint at {path}')
        if path.endswith('.safetensors'):
            from safetensors.numpy import load_file
            try:
                sd = load_file(path)
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f'{path} is not a readable .safetensors file ({e}); is the download '
                                 f'complete?') from e
        else:
            try:
                import torch
            except ImportError as e:
                raise ImportError(f'reading {path} needs PyTorch (pip install torch), or convert it to '
                                  f'.safetensors first') from e
            try:
                sd = torch.load(path, map_location='cpu', weights_only=True)
            except Exception as e:
                reason = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()[0]  # torch's text is long and coloured
                raise ValueError(f'cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {reason}); '
                                 f'the file is corrupt or truncated, or holds pickled code that '
                                 f'weights_only=True refuses to run') from e
    else:
        sd = src
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


def _canonical_simmim(sd: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    # Older SimMIM checkpoints call the CPB meta network `rpe_mlp`.
    return {k.replace('.rpe_mlp.', '.cpb_mlp.'): v for k, v in sd.items()}


def _is_ignored(key: str, layout: str, model: SwinTransformerV2) -> bool:
    if any(key.endswith(b) for b in IGNORED_BUFFERS) or key.endswith('num_batches_tracked'):
        return True
    if layout == 'simmim' and not key.startswith('encoder.'):
        return True  # the SimMIM decoder: not part of the encoder
    if layout == 'hf' and key.startswith('decoder.'):
        return True  # Swinv2ForMaskedImageModeling's decoder (convert_simmim.py loads it)
    if key in ('encoder.mask_token', 'swinv2.embeddings.mask_token', 'swin.embeddings.mask_token',
               'embeddings.mask_token'):
        return True  # SimMIM's mask token, used in pre-training only
    if model.num_classes == 0 and (key.startswith('head.') or key.startswith('classifier.')):
        return True  # a headless model drops the classifier
    return False


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
    sd = read_state_dict(src)
    prefix = 'swinv2.'
    if layout is None:
        layout, prefix = detect_layout(sd)
    elif layout == 'hf':
        prefix = next((p for p in HF_PREFIXES if any(k.startswith(p) for k in sd)), '')
    if layout == 'simmim':
        sd = _canonical_simmim(sd)
    if layout == 'hf':
        sd = _canonical_hf_v1(sd)

    expected = traverse_util.flatten_dict(abstract_variables(model)['params'])
    sd, transfer_log = _resize_tables(sd, model, expected, layout, prefix)
    params, missing, misshaped, used = {}, [], [], set()
    head_classes = None  # the checkpoint's class count, where it differs from the model's
    for path, spec in expected.items():
        names = torch_names(path, layout, prefix)
        absent = [n for n in names if n not in sd]
        if absent:
            missing.extend(absent)
            continue
        used.update(names)
        value = _to_flax(path, [sd[n] for n in names])
        if value.shape != spec.shape:
            want = _torch_shape(path, spec.shape, len(names))
            got = tuple(sd[names[0]].shape)
            misshaped.append(f'{names[0]}: checkpoint {got}, model {want}')
            if path[0] == 'head' and path[-1] == 'bias':
                head_classes = got[0]
            continue
        params[path] = jnp.asarray(value, dtype=spec.dtype)
    unexpected = sorted(k for k in sd if k not in used and not _is_ignored(k, layout, model))

    if missing or unexpected or misshaped:
        lines = [f'the {layout}-layout checkpoint does not match the model '
                 f'(embed_dim={model.embed_dim}, depths={model.depths}, num_classes={model.num_classes}):']
        for what, keys, sep in (('missing', missing, ', '), ('unexpected', unexpected, ', '),
                                 ('mis-shaped', misshaped, '; ')):
            if keys:
                lines.append(f'  {what} ({len(keys)}): ' + sep.join(keys))
        if head_classes is not None:
            lines.append(f'  the classifier differs: the checkpoint has {head_classes} classes; pass '
                         f'num_classes={head_classes} to create_model, or num_classes=0 to drop the head')
        if missing or unexpected or any(not m.startswith(('head', 'classifier')) for m in misshaped):
            lines.append('  check that the model name matches the checkpoint (list_models()), and that '
                         'the layout (detected or given) is right')
        raise ValueError('\n'.join(lines))
    log.info('loaded %d %s-layout tensors into %s', len(used), layout, type(model).__name__)
    for line in transfer_log:
        log.info('%s', line)
    return {'params': traverse_util.unflatten_dict(params)}


def _resize_tables(sd: Dict[str, np.ndarray], model: SwinTransformerV2, expected, layout: str,
                   prefix: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """`sd` with each V1 position bias table saved for another window resized to the model's."""
    windows = transfer.table_windows(model)
    names = {path: torch_names(path, layout, prefix)[0] for path in windows}
    source = {path: sd[n] for path, n in names.items() if n in sd}
    shapes = {path: expected[path].shape for path in windows if path in expected}
    resized, lines = transfer.transfer_tables(source, shapes, windows)
    if not resized:
        return sd, lines
    sd = dict(sd)
    for path, table in resized.items():
        sd[names[path]] = table
    return sd, lines


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
    if layout not in ('timm', 'official', 'hf', 'simmim'):
        raise ValueError(f'unknown layout {layout!r}; valid layouts: timm, official, hf, simmim')
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


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

_CLI_EPILOG = """\
examples:
  # PyTorch checkpoint (official, SimMIM, timm or Hugging Face; layout detected) -> DIR
  python -m swinv2_jax.convert swinv2_tiny_patch4_window8_256.pth --model swinv2_tiny_window8_256 --out ckpt/tiny
  # a headless feature extractor at another resolution (the position bias needs no resizing)
  python -m swinv2_jax.convert model.safetensors --model swinv2_tiny_window8_256 --img-size 512 \\
      --num-classes 0 --out ckpt/tiny_512_features
  # Swin V1 at another window: its position bias tables are resized bicubically (logged)
  python -m swinv2_jax.convert swin_base_patch4_window7_224.pth --model swin_base_patch4_window12_384 --out ckpt/b12
  # reduced test models: any create_model override as KEY=VALUE (Python literals)
  python -m swinv2_jax.convert t.pth --model swinv2_tiny_window8_256 --override embed_dim=16 \\
      --override 'depths=(1,2,1,1)' --override 'num_heads=(1,2,2,4)' --out ckpt/small
  # back to PyTorch (timm / official repo / Hugging Face names), as .safetensors
  python -m swinv2_jax.convert ckpt/tiny --to-torch --layout hf --out tiny_hf.safetensors

load DIR in Python with: model, variables = swinv2_jax.checkpoints.load_converted(DIR)
"""


def _parse_override(text: str) -> Tuple[str, Any]:
    import argparse
    import ast
    key, sep, value = text.partition('=')
    key = key.strip().replace('-', '_')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()  # a bare word, e.g. dtype=bfloat16
    return key, parsed


def _cli_parser():
    import argparse
    import textwrap
    from swinv2_jax.models.registry import OVERRIDES, list_models
    p = argparse.ArgumentParser(
        prog='python -m swinv2_jax.convert',
        description='Convert SwinV2 weights between PyTorch checkpoints (official repo, SimMIM, timm, '
                    'Hugging Face; .pth/.pt/.bin/.safetensors) and swinv2_jax converted checkpoints '
                    '(a directory: Orbax variables + config.json).',
        epilog=_CLI_EPILOG + '\n'.join(
            textwrap.wrap('model names: ' + ', '.join(list_models()) + ' (official and Hugging Face '
                          'names work too)', 100, subsequent_indent='  ')
            + textwrap.wrap('overrides: ' + ', '.join(OVERRIDES), 100, subsequent_indent='  ')) + '\n',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', metavar='SRC',
                   help='a PyTorch checkpoint file, or with --to-torch a converted checkpoint directory')
    p.add_argument('--out', '-o', required=True, metavar='OUT',
                   help='the directory to write (PyTorch -> JAX), or the .safetensors file (--to-torch)')
    p.add_argument('--to-torch', action='store_true',
                   help='convert a converted checkpoint directory back to a PyTorch .safetensors file')
    p.add_argument('--model', '-m', metavar='NAME',
                   help='registered model name (required unless --to-torch), e.g. swinv2_tiny_window8_256')
    p.add_argument('--layout', choices=('auto',) + LAYOUTS, default=None,
                   help='PyTorch naming: auto (detect; the default when reading), official, simmim, timm, '
                        'hf; with --to-torch one of timm (default), official, hf')
    p.add_argument('--num-classes', type=int, metavar='N',
                   help='classifier size (0: headless, a checkpoint\'s head is then dropped)')
    p.add_argument('--img-size', type=int, metavar='N', help='input image side the model is built for')
    p.add_argument('--window-size', type=int, metavar='N',
                   help='attention window of every stage (per stage: --override "window_size=(a,b,c,d)")')
    p.add_argument('--override', action='append', default=[], type=_parse_override, metavar='KEY=VALUE',
                   help='any other create_model override, VALUE a Python literal; repeatable')
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    return p


def _count(tree) -> Tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(tree)
    return len(leaves), int(sum(int(np.prod(np.shape(x))) for x in leaves))


def _cli_to_jax(args, parser) -> str:
    from swinv2_jax.checkpoints import save_converted
    from swinv2_jax.models.registry import create_model, resolve_name
    if not args.model:
        parser.error('--model NAME is required to convert a PyTorch checkpoint')
    overrides: Dict[str, Any] = {}
    for key, value in args.override:
        if key in overrides and overrides[key] != value:
            parser.error(f'--override {key} given twice with different values')
        overrides[key] = value
    for key, value in (('num_classes', args.num_classes), ('img_size', args.img_size),
                       ('window_size', args.window_size)):
        if value is None:
            continue
        if key in overrides and overrides[key] != value:
            parser.error(f'--{key.replace("_", "-")} {value} contradicts --override {key}={overrides[key]!r}')
        overrides[key] = value
    model = create_model(args.model, **overrides)
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:  # fail before reading
        raise ValueError(f'{args.out} already exists and is not empty; pass --overwrite to replace it')

    sd = read_state_dict(args.src)
    layout = args.layout if args.layout not in (None, 'auto') else detect_layout(sd)[0]
    variables = load_torch_weights(sd, model, layout=layout)
    out = save_converted(args.out, variables, model, model_name=resolve_name(args.model),
                         overwrite=args.overwrite)
    tensors, params = _count(variables)
    return (f'converted {tensors} tensors ({params:,} parameters) from the {layout}-layout {args.src} '
            f'-> {out}')


def _cli_to_torch(args, parser) -> str:
    from safetensors.numpy import save_file
    from swinv2_jax.checkpoints import load_converted
    given = [f for f, v in (('--model', args.model), ('--num-classes', args.num_classes),
                            ('--img-size', args.img_size), ('--window-size', args.window_size),
                            ('--override', args.override)) if v]
    if given:
        parser.error(f'{", ".join(given)} not used with --to-torch: the model comes from {args.src}/config.json')
    layout = args.layout or 'timm'
    if layout not in ('timm', 'official', 'hf'):
        parser.error(f'--to-torch writes the timm, official or hf layout, not {layout}')
    out = os.path.abspath(args.out)
    if not out.endswith('.safetensors'):
        raise ValueError(f'--to-torch writes .safetensors files; {args.out} needs that extension')
    if os.path.exists(out) and not args.overwrite:
        raise ValueError(f'{out} already exists; pass --overwrite to replace it')

    model, variables = load_converted(args.src)
    sd = export_torch_weights(variables, model, layout=layout)
    if layout == 'hf' and model.num_classes == 0:  # Swinv2Model / SwinModel (no classifier): no prefix
        prefix = hf_prefix(model)
        sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f'{out}.tmp-{os.getpid()}'
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, tmp, metadata={'format': 'pt'})
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    tensors, params = _count(variables)
    return (f'wrote {len(sd)} tensors ({params:,} parameters in {tensors} JAX arrays) in the {layout} '
            f'layout -> {out}')


def main(argv=None) -> int:
    """`python -m swinv2_jax.convert`: see `--help`. Returns the exit status."""
    import sys
    parser = _cli_parser()
    args = parser.parse_args(argv)
    try:
        summary = _cli_to_torch(args, parser) if args.to_torch else _cli_to_jax(args, parser)
    except (ValueError, OSError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted; nothing was written', file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
