"""The released SwinV2 (and Swin V1) variants as data, and the `create_model` / `list_models` factory.

Segmentation models are a head's name before a backbone's: `upernet_swinv2_base_window16_256` is
UperNet (`models/upernet.py`) on that backbone (`HEADS`); the Hugging Face hub's UperNets are aliases
with their settings (`SEGMENTATION_ALIASES`).

Canonical names are timm's. Swin Transformer V1 (`swin_*`) is this model with every ablation switch
at its V1 value (`SWIN_V1`: pre-norm, dot-product attention, a position bias table, a qkv bias, V1
patch merging). The official repository's long names (`swinv2_tiny_patch4_window8_256`,
`..._22kto1k_ft`) and the Hugging Face hub names (`microsoft/swinv2-tiny-patch4-window8-256`) are
aliases, and a timm pretrained tag (`swinv2_base_window12_192.ms_in22k`) is accepted and ignored.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import fnmatch
from typing import Any, Dict, List, Tuple

import jax.numpy as jnp

from swinv2_jax.models.swin_transformer_v2 import SWIN_V1, SWITCHES, SwinTransformerV2, to_pair
from swinv2_jax.models.upernet import UperNet

_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_FT_FROM_192 = dict(pretrained_window_sizes=(12, 12, 12, 6))

# timm name -> architecture (defaults: 1000 classes, no pretrained windows, drop_path_rate 0.1)
VARIANTS: Dict[str, Dict[str, Any]] = {
    'swinv2_tiny_window8_256': dict(**_T, window_size=8, img_size=256),
    'swinv2_tiny_window16_256': dict(**_T, window_size=16, img_size=256),
    'swinv2_small_window8_256': dict(**_S, window_size=8, img_size=256),
    'swinv2_small_window16_256': dict(**_S, window_size=16, img_size=256),
    'swinv2_base_window8_256': dict(**_B, window_size=8, img_size=256),
    'swinv2_base_window16_256': dict(**_B, window_size=16, img_size=256),
    'swinv2_base_window12_192': dict(**_B, window_size=12, img_size=192, num_classes=21841),
    'swinv2_base_window12to16_192to256': dict(**_B, window_size=16, img_size=256, **_FT_FROM_192),
    'swinv2_base_window12to24_192to384': dict(**_B, window_size=24, img_size=384, **_FT_FROM_192),
    'swinv2_large_window12_192': dict(**_L, window_size=12, img_size=192, num_classes=21841),
    'swinv2_large_window12to16_192to256': dict(**_L, window_size=16, img_size=256, **_FT_FROM_192),
    'swinv2_large_window12to24_192to384': dict(**_L, window_size=24, img_size=384, **_FT_FROM_192),
    # The paper's SwinV2-H (658M) and SwinV2-G (3.0B) (Sec. 3.5): C and depths are the paper's. No
    # code or weights were released, so these are inferred: heads from a head dim of 32 as in T/S/B/L;
    # the extra main-branch LayerNorm after every 6th block of a stage (the paper: "every 6 layers");
    # 192x192 / window 12, the resolution and window of the paper's pre-training (Sec. 4.1, A2).
    'swinv2_huge_window12_192': dict(embed_dim=352, depths=(2, 2, 18, 2), num_heads=(11, 22, 44, 88),
                                     window_size=12, img_size=192, extra_norm_every=6),
    'swinv2_giant_window12_192': dict(embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128),
                                      window_size=12, img_size=192, extra_norm_every=6),
    # Swin Transformer V1 (timm's `swin_transformer.py`; the official names are the same). At
    # 224/window 7 the last stage is a 7x7 map: one unshifted window.
    'swin_tiny_patch4_window7_224': dict(**_T, window_size=7, img_size=224, **SWIN_V1),
    'swin_small_patch4_window7_224': dict(**_S, window_size=7, img_size=224, **SWIN_V1),
    'swin_base_patch4_window7_224': dict(**_B, window_size=7, img_size=224, **SWIN_V1),
    'swin_base_patch4_window12_384': dict(**_B, window_size=12, img_size=384, **SWIN_V1),
    'swin_large_patch4_window7_224': dict(**_L, window_size=7, img_size=224, **SWIN_V1),
    'swin_large_patch4_window12_384': dict(**_L, window_size=12, img_size=384, **SWIN_V1),
    # This project's small model for the embedded digits (no released weights): two stages on an
    # 8x8 token map of 32x32 images, window 4, C=48 (~0.3M parameters; minutes on two CPU cores).
    'swinv2_digits_window4_32': dict(embed_dim=48, depths=(2, 2), num_heads=(3, 6), window_size=4,
                                     img_size=32, num_classes=10),
}

_OFFICIAL = {
    'swinv2_tiny_patch4_window8_256': 'swinv2_tiny_window8_256',
    'swinv2_tiny_patch4_window16_256': 'swinv2_tiny_window16_256',
    'swinv2_small_patch4_window8_256': 'swinv2_small_window8_256',
    'swinv2_small_patch4_window16_256': 'swinv2_small_window16_256',
    'swinv2_base_patch4_window8_256': 'swinv2_base_window8_256',
    'swinv2_base_patch4_window16_256': 'swinv2_base_window16_256',
    'swinv2_base_patch4_window12_192_22k': 'swinv2_base_window12_192',
    'swinv2_base_patch4_window12to16_192to256_22kto1k_ft': 'swinv2_base_window12to16_192to256',
    'swinv2_base_patch4_window12to24_192to384_22kto1k_ft': 'swinv2_base_window12to24_192to384',
    'swinv2_large_patch4_window12_192_22k': 'swinv2_large_window12_192',
    'swinv2_large_patch4_window12to16_192to256_22kto1k_ft': 'swinv2_large_window12to16_192to256',
    'swinv2_large_patch4_window12to24_192to384_22kto1k_ft': 'swinv2_large_window12to24_192to384',
}
# The hub names are the official names with '-' for '_'.
_HF = {'microsoft/' + k.replace('_', '-'): v for k, v in _OFFICIAL.items()}
# Swin V1: the official names are timm's; the hub's are them with '-' (weights of the 1K heads).
_HF.update({'microsoft/' + k.replace('_', '-'): k for k in VARIANTS if k.startswith('swin_')})
ALIASES: Dict[str, str] = {
    **_OFFICIAL, **_HF,
    'swinv2_huge': 'swinv2_huge_window12_192', 'swinv2_giant': 'swinv2_giant_window12_192',
}

# The paper's ablation rows as create_model overrides (README: "Ablations and Swin V1"). The paper
# gives no code for them; the settings not named in a row are inferred to stay at the base's values.
ABLATIONS: Dict[str, Dict[str, Any]] = {
    # Table 6: res-post-norm, then scaled cosine attention, applied to Swin V1 (on swin_* variants;
    # V1's table, qkv bias and merging are kept).
    'table6_swin_v1': {},
    'table6_res_post_norm': dict(norm_placement='res_post'),
    'table6_res_post_norm_cosine': dict(norm_placement='res_post', attention='cosine'),
    # Table 1: the position bias of SwinV2 (on swinv2_* variants; pre-trained at 256 / window 8,
    # evaluated or fine-tuned at larger windows with pretrained_window_sizes=8).
    'table1_parameterized': dict(position_bias='table'),
    'table1_linear_cpb': dict(position_bias='linear_cpb'),
    'table1_log_cpb': dict(position_bias='log_cpb'),
    # Table 7: pre-norm instead of res-post-norm in SwinV2 (sandwich norm is not implemented).
    'table7_pre_norm': dict(norm_placement='pre'),
}

OVERRIDES = (
    'num_classes', 'img_size', 'window_size', 'pretrained_window_sizes', 'drop_rate', 'attn_drop_rate',
    'drop_path_rate', 'dtype', 'param_dtype', 'embed_dim', 'depths', 'num_heads', 'mlp_ratio',
    'patch_size', 'in_chans', 'extra_norm_every', 'remat_policy', 'sequential_attention',
    'attention_chunk_size', 'sequential_mlp', 'mlp_chunk_tokens', 'use_mask_token',
    # the ablation switches (SwinV2 <-> V1; see SwinTransformerV2) and inputs of any size
    *SWITCHES, 'strict_img_size', 'window_padding',
)


def parse_override(text: str) -> Tuple[str, Any]:
    """'KEY=VALUE' from a command line -> (key, value): the value a Python literal where it parses as
    one (`depths=(2,2)`, `window_size=16`), else the bare string (`dtype=bfloat16`); '-' in the key
    reads as '_'. Raises ValueError without '='."""
    key, sep, value = text.partition('=')
    key = key.strip().replace('-', '_')
    if not sep or not key:
        raise ValueError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key, value.strip()


def list_models(pattern: str = '*', aliases: bool = False) -> List[str]:
    """Registered model names matching a shell-style pattern (timm names; `aliases=True` adds the
    official and Hugging Face names)."""
    names = list(VARIANTS) + (list(ALIASES) if aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def resolve_name(name: str) -> str:
    """The canonical (timm) name of a registered name or alias; ValueError listing the valid ones."""
    key = name.strip()
    if key in VARIANTS:
        return key
    base = key.split('.')[0] if not key.startswith('microsoft/') else key  # timm pretrained tag
    for cand in (base, base.lower(), 'microsoft/' + base.lower()):
        if cand in VARIANTS:
            return cand
        if cand in ALIASES:
            return ALIASES[cand]
    close = difflib.get_close_matches(base.lower(), list(VARIANTS) + list(ALIASES), n=3, cutoff=0.6)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'unknown model {name!r}.{hint} Valid names: {", ".join(list_models())} '
                     f'(official and Hugging Face names are accepted too: list_models(aliases=True)).')


def _per_stage(value, n: int, what: str):
    """An int, a pair, or one int/pair per stage -> a tuple of n pairs."""
    if isinstance(value, (int, float)) or (isinstance(value, (tuple, list)) and len(value) == 2
                                           and all(isinstance(v, int) for v in value) and n != 2):
        return (to_pair(value),) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f'{what} needs one entry per stage ({n}), or a single int, got {value!r}')
    return tuple(to_pair(v) for v in value)


def _stage_indices(value):
    """An int or an iterable of ints -> a tuple of stage indices (other values go to the model's check)."""
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(_integer(i) for i in value)
    except TypeError:
        return value


def _integer(value):
    """ints (and integral floats) as int; anything else unchanged, for the model's check to name."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_dtype(value):
    return jnp.dtype(value).type if isinstance(value, str) else value


def model_config(name: str, **overrides) -> Dict[str, Any]:
    """The constructor arguments `create_model(name, **overrides)` uses (plain data, JSON-friendly
    but for dtypes)."""
    canonical = resolve_name(name)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f'unknown override(s) {", ".join(unknown)} for create_model; valid overrides: '
                         f'{", ".join(OVERRIDES)}')
    cfg = dict(num_classes=1000, drop_path_rate=0.1, pretrained_window_sizes=0)
    cfg.update(VARIANTS[canonical])
    cfg.update(overrides)
    return cfg


def create_model(name: str, **overrides) -> SwinTransformerV2:
    """Build a registered SwinV2 (timm, official or Hugging Face name) with optional overrides.

    Overrides: num_classes (0: no head, pooled features out), img_size (int or (H, W)), window_size
    (int, pair, or one per stage), pretrained_window_sizes (likewise, 0 = none), drop_rate,
    attn_drop_rate, drop_path_rate, dtype, param_dtype, and the architecture fields embed_dim, depths,
    num_heads, mlp_ratio, patch_size, in_chans, extra_norm_every (for reduced test models), and the
    memory switches remat_policy ('none', 'full', 'dots', 'dots_no_batch'), sequential_attention
    (stage indices) and attention_chunk_size (windows per step), sequential_mlp (stage indices) and
    mlp_chunk_tokens (tokens per step), which never change the numbers;
    use_mask_token (SimMIM's learned mask token, see `SwinTransformerV2.features`).
    Ablation switches (defaults: SwinV2; the `swin_*` variants set the V1 values): norm_placement
    ('res_post', 'pre'), attention ('cosine', 'dot'), position_bias ('log_cpb', 'linear_cpb',
    'table'), qkv_bias ('qv', 'qkv'), patch_merging ('v2', 'v1'); strict_img_size=False takes
    images of any size (multiples of patch_size) at apply time, padding as timm's dynamic mode.
    Raises ValueError for an unknown name or override and for a size the windows cannot tile.

    `upernet_<backbone name>` (and the `openmmlab/upernet-swin-*` hub names) build a `UperNet`
    segmentation model instead: see `create_segmentation_model`.
    """
    if segmentation_head(name):
        return create_segmentation_model(name, **overrides)
    cfg = model_config(name, **overrides)
    n = len(cfg['depths'])
    model = SwinTransformerV2(
        img_size=to_pair(cfg['img_size']),
        patch_size=int(cfg.get('patch_size', 4)),
        in_chans=int(cfg.get('in_chans', 3)),
        num_classes=int(cfg['num_classes']),
        embed_dim=int(cfg['embed_dim']),
        depths=tuple(int(d) for d in cfg['depths']),
        num_heads=tuple(int(h) for h in cfg['num_heads']),
        window_size=_per_stage(cfg['window_size'], n, 'window_size'),
        pretrained_window_sizes=_per_stage(cfg['pretrained_window_sizes'], n, 'pretrained_window_sizes'),
        mlp_ratio=float(cfg.get('mlp_ratio', 4.0)),
        drop_rate=float(cfg.get('drop_rate', 0.0)),
        attn_drop_rate=float(cfg.get('attn_drop_rate', 0.0)),
        drop_path_rate=float(cfg['drop_path_rate']),
        extra_norm_every=int(cfg.get('extra_norm_every', 0)),
        use_mask_token=bool(cfg.get('use_mask_token', False)),
        remat_policy=str(cfg.get('remat_policy', 'none')),
        sequential_attention=_stage_indices(cfg.get('sequential_attention', ())),
        attention_chunk_size=_integer(cfg.get('attention_chunk_size', 8)),
        sequential_mlp=_stage_indices(cfg.get('sequential_mlp', ())),
        mlp_chunk_tokens=_integer(cfg.get('mlp_chunk_tokens', 8192)),
        **{k: cfg.get(k, v[0]) for k, v in SWITCHES.items()},
        strict_img_size=cfg.get('strict_img_size', True),
        window_padding=cfg.get('window_padding', 'timm'),
        dtype=_as_dtype(cfg.get('dtype', jnp.float32)),
        param_dtype=_as_dtype(cfg.get('param_dtype', jnp.float32)),
    )
    model.check_config()
    return model


def model_fields(model) -> Dict[str, Any]:
    """The architecture of a built model as plain data (for saving next to its weights); a
    segmentation model's has its head's name under 'head' and its backbone's fields under 'backbone'."""
    head = next((h for h, row in HEADS.items() if isinstance(model, row['model'])), None)
    if head is not None:
        out = {'head': head, 'backbone': model_fields(model.backbone)}
        out.update({k: _plain(getattr(model, k)) for k in HEADS[head]['fields']})
        return out
    out = {}
    for f in dataclasses.fields(SwinTransformerV2):
        if f.name in ('parent', 'name'):
            continue
        v = getattr(model, f.name)
        if f.name in ('dtype', 'param_dtype'):
            v = jnp.dtype(v).name
        elif isinstance(v, tuple):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        out[f.name] = v
    return out


def model_from_fields(fields: Dict[str, Any]):
    """Inverse of `model_fields`."""
    if 'head' in fields:
        head = fields['head']
        if head not in HEADS:
            raise ValueError(f'unknown segmentation head {head!r} in the model fields; known: {", ".join(HEADS)}')
        kw = {k: v for k, v in fields.items() if k not in ('head', 'backbone')}
        return _build_head(head, model_from_fields(fields['backbone']), kw)
    kw = {}
    for k, v in fields.items():
        if k in ('dtype', 'param_dtype'):
            v = jnp.dtype(v).type
        elif isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kw[k] = v
    model = SwinTransformerV2(**kw)
    model.check_config()
    return model


# ----------------------------------------------------------------------------------------------
# Segmentation: a head on any backbone above
# ----------------------------------------------------------------------------------------------

# head name -> its model class, its fields (besides the backbone) with their defaults
HEADS: Dict[str, Dict[str, Any]] = {
    'upernet': dict(model=UperNet, fields=dict(num_classes=150, head_channels=512, pool_scales=(1, 2, 3, 6),
                                               aux_channels=256, out_norms=True, dropout=0.1,
                                               dtype=jnp.float32, param_dtype=jnp.float32)),
}
# Overrides that go to the backbone (the rest of OVERRIDES) or to both (the dtypes).
_SHARED_OVERRIDES = ('dtype', 'param_dtype')

# Hugging Face hub name -> (registered name, overrides): transformers' conversions of
# mmsegmentation's ADE20K UperNets (its `convert_swin_upernet_to_pytorch.py`): Swin V1 with output
# norms, window 7 (T, S) or 12 (B, L), 150 classes, run on 512x512 crops (the windows do not tile
# its stages: the feature maps are padded before the shift and windows never clipped, as
# mmsegmentation and Hugging Face's SwinBackbone do).
_HUB_UPERNET = dict(img_size=512, strict_img_size=False, window_padding='mmseg', num_classes=150)
SEGMENTATION_ALIASES: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'openmmlab/upernet-swin-tiny': ('upernet_swin_tiny_patch4_window7_224', _HUB_UPERNET),
    'openmmlab/upernet-swin-small': ('upernet_swin_small_patch4_window7_224', _HUB_UPERNET),
    'openmmlab/upernet-swin-base': ('upernet_swin_base_patch4_window12_384', _HUB_UPERNET),
    'openmmlab/upernet-swin-large': ('upernet_swin_large_patch4_window12_384', _HUB_UPERNET),
}


def _plain(v):
    if isinstance(v, tuple):
        return [list(x) if isinstance(x, tuple) else x for x in v]
    if isinstance(v, type) or isinstance(v, jnp.dtype):
        return jnp.dtype(v).name
    return v


def segmentation_head(name: str):
    """The head of a segmentation model name ('upernet'), or None for a classification name."""
    key = name.strip()
    if key.lower() in SEGMENTATION_ALIASES:
        key = SEGMENTATION_ALIASES[key.lower()][0]
    head = key.split('_', 1)[0]
    return head if head in HEADS and '_' in key else None


def list_segmentation_models(pattern: str = '*') -> List[str]:
    """Segmentation model names (a head on each registered backbone) matching a shell-style pattern."""
    return sorted(n for n in (f'{h}_{b}' for h in HEADS for b in VARIANTS) if fnmatch.fnmatch(n, pattern))


def _build_head(head: str, backbone: SwinTransformerV2, kw: Dict[str, Any]):
    row = HEADS[head]
    unknown = sorted(set(kw) - set(row['fields']))
    if unknown:
        raise ValueError(f'unknown {head} field(s) {", ".join(unknown)}; valid: {", ".join(row["fields"])}')
    cfg = {**row['fields'], **kw}
    for k in ('dtype', 'param_dtype'):
        cfg[k] = _as_dtype(cfg[k])
    cfg['pool_scales'] = tuple(_integer(s) for s in _stage_indices(cfg['pool_scales']))
    model = row['model'](backbone=backbone, **cfg)
    model.check_config()
    return model


def create_segmentation_model(name: str, **overrides):
    """`upernet_<backbone>` (any registered backbone name or alias) or a hub alias
    (`openmmlab/upernet-swin-base`): the head on that backbone, headless.

    Overrides: every backbone override of `create_model` (img_size, window_size,
    pretrained_window_sizes, the architecture fields, the memory and ablation switches, dtype and
    param_dtype, which the head uses too), and the head's: num_classes (150), head_channels (512),
    pool_scales ((1, 2, 3, 6)), aux_channels (256; 0 = no auxiliary head), out_norms (True: a
    LayerNorm on each stage output, as mmsegmentation and Hugging Face's SwinBackbone; False for
    Hugging Face's Swinv2Backbone), dropout (0.1). Raises ValueError naming a bad name or override
    and a backbone the head cannot use.
    """
    key = name.strip()
    if key.lower() in SEGMENTATION_ALIASES:
        key, alias_overrides = SEGMENTATION_ALIASES[key.lower()]
        overrides = {**alias_overrides, **overrides}
    head = segmentation_head(key)
    if head is None:
        raise ValueError(f'{name!r} is not a segmentation model name; use one of {", ".join(HEADS)} + "_" + a '
                         f'backbone name (list_segmentation_models()), or {", ".join(SEGMENTATION_ALIASES)}')
    fields = HEADS[head]['fields']
    unknown = sorted(set(overrides) - set(fields) - set(OVERRIDES))
    if unknown:
        raise ValueError(f'unknown override(s) {", ".join(unknown)} for {key}; valid overrides: the backbone\'s '
                         f'({", ".join(o for o in OVERRIDES if o != "num_classes")}) and the head\'s '
                         f'({", ".join(fields)})')
    head_kw = {k: v for k, v in overrides.items() if k in fields}
    backbone_kw = {k: v for k, v in overrides.items() if k not in fields or k in _SHARED_OVERRIDES}
    try:
        backbone = create_model(key.split('_', 1)[1], **backbone_kw, num_classes=0)
    except ValueError as e:
        raise ValueError(f'{key}: the backbone {key.split("_", 1)[1]!r}: {e}') from e
    return _build_head(head, backbone, head_kw)
