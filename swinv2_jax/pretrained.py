"""`from_pretrained(path) -> (model, variables, info)`: a model, its weights and its preprocessing
from a folder, with the architecture read from the files.

Each kind of source is a row of `SOURCES` (recognise, load):
- `converted`: a converted checkpoint of this project (config.json + variables/, weights.converted);
- `training`: a train.py workdir (its latest checkpoint; model and preprocessing from its meta);
- `timm`: a timm hub folder (config.json with `architecture`, `model_args`, `pretrained_cfg`,
  `label_names`; model.safetensors or pytorch_model.bin);
- `transformers`: a Hugging Face hub folder (config.json of a model type in `HF_MODEL_TYPES`: Swin,
  Swinv2, and UperNet on either for segmentation;
  model.safetensors, sharded safetensors with model.safetensors.index.json, or
  pytorch_model.bin; preprocessor_config.json).
Nothing is downloaded: a hub name is looked up in the local Hugging Face cache only, and
otherwise the error says how to download it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from swinv2_jax.constants import IMAGENET_MEAN, IMAGENET_STD
from swinv2_jax.models import SwinTransformerV2, create_model, resolve_name

log = logging.getLogger(__name__)

CONFIG = 'config.json'
HF_PROCESSOR = 'preprocessor_config.json'
# weight files of a hub folder, in the order looked for: (file, index of its shards)
WEIGHT_FILES = (('model.safetensors', 'model.safetensors.index.json'),
                ('pytorch_model.bin', 'pytorch_model.bin.index.json'))
# this project's evaluation default (config_lib.base_aug), and timm's for its 384 checkpoints
DEFAULT_CROP_PCT, DEFAULT_CROP_PCT_384 = 0.9, 1.0
DEFAULT_INTERPOLATION = 'bicubic'
# Pillow's filter numbers, as Hugging Face image processors save `resample`
PIL_RESAMPLE = {0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming'}
INTERPOLATIONS = tuple(PIL_RESAMPLE.values())   # what swinv2_jax.images resizes with
CROP_MODES = ('center', 'squash')               # timm's crop modes that images implements ('border' is not)


@dataclasses.dataclass(frozen=True)
class PretrainedInfo:
    """What a checkpoint says about its use: class names and evaluation preprocessing
    (swinv2_jax.images.eval_transform)."""
    labels: Optional[Tuple[str, ...]]      # class names in head order, None when the files have none
    mean: Tuple[float, float, float]       # per channel, of images scaled to 0..1
    std: Tuple[float, float, float]
    input_size: Tuple[int, int]            # (height, width) the model takes
    crop_pct: float                        # resize to input_size / crop_pct, then the centred crop
    interpolation: str                     # 'bicubic', 'bilinear', ... (images.INTERPOLATIONS)
    crop_mode: str = 'center'              # 'center': shorter side, aspect kept; 'squash': both sides
    task: str = 'classification'           # what the model predicts (predict.TASKS)
    source: str = ''                       # the SOURCES row that read it


def _default_info(model, **changes) -> PretrainedInfo:
    size = tuple(int(s) for s in model.img_size)
    info = PretrainedInfo(labels=None, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD), input_size=size,
                          crop_pct=DEFAULT_CROP_PCT_384 if min(size) >= 384 else DEFAULT_CROP_PCT,
                          interpolation=DEFAULT_INTERPOLATION)
    return dataclasses.replace(info, **changes)


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f'{path} is not readable JSON ({e}); is the download complete?') from e


def _unsupported(path: str, problems: List[str]) -> None:
    if problems:
        raise ValueError(f'{path} describes a model this package cannot represent: ' + '; '.join(problems))


# ----------------------------------------------------------------------------------------------
# Weights of hub folders (one file, or shards with an index)
# ----------------------------------------------------------------------------------------------

def read_hub_weights(folder: str) -> Dict[str, Any]:
    """The state dict of a hub folder: model.safetensors, its shards (model.safetensors.index.json),
    or pytorch_model.bin (and its shards); the first found."""
    from swinv2_jax.weights.torch_layouts import read_state_dict
    for single, index in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, single)):
            return read_state_dict(os.path.join(folder, single))
        if os.path.isfile(os.path.join(folder, index)):
            weight_map = _read_json(os.path.join(folder, index)).get('weight_map')
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f'{os.path.join(folder, index)} has no "weight_map" of names to shard files')
            sd = {}
            for shard in sorted(set(weight_map.values())):
                sd.update(read_state_dict(os.path.join(folder, shard)))
            missing = sorted(set(weight_map) - set(sd))
            if missing:
                raise ValueError(f'the shards of {folder} lack {len(missing)} tensors that {index} lists '
                                 f'(first: {missing[:3]}); is the download complete?')
            return sd
    names = ', '.join(f for pair in WEIGHT_FILES for f in pair)
    raise FileNotFoundError(f'{folder} has no weights: none of {names}')


def _load_weights(sd: Mapping[str, Any], model, layout: str) -> Dict[str, Any]:
    from swinv2_jax.weights.pytorch import load_torch_weights   # a classifier's or a UperNet's layouts
    return load_torch_weights(sd, model, layout=layout)


# ----------------------------------------------------------------------------------------------
# transformers folders: config.json -> create_model arguments, one row per model type
# ----------------------------------------------------------------------------------------------

def _hf_pair(value, what: str, problems: List[str]) -> Optional[int]:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            problems.append(f'{what} {list(value)} is not square')
            return None
        value = value[0]
    return int(value)


def _hf_swin(cfg: Dict[str, Any], path: str, v1: bool) -> Tuple[str, Dict[str, Any]]:
    """(registered base name, create_model overrides) of a Swinv2Config (v1: SwinConfig)."""
    problems = []
    if cfg.get('hidden_act', 'gelu') != 'gelu':
        problems.append(f'hidden_act={cfg["hidden_act"]!r} (only gelu)')
    if cfg.get('use_absolute_embeddings', False):
        problems.append('use_absolute_embeddings=true (no absolute position embedding here)')
    if not cfg.get('qkv_bias', True):
        problems.append('qkv_bias=false (the attention here always has its biases)')
    if abs(float(cfg.get('layer_norm_eps', 1e-5)) - 1e-5) > 1e-12:
        problems.append(f'layer_norm_eps={cfg["layer_norm_eps"]} (LayerNorms here use 1e-5)')
    patch = _hf_pair(cfg.get('patch_size', 4), 'patch_size', problems)
    image = cfg.get('image_size', 224)
    image = tuple(image) if isinstance(image, (list, tuple)) else (int(image), int(image))
    _unsupported(os.path.join(path, CONFIG), problems)
    overrides = dict(img_size=image, patch_size=patch, in_chans=int(cfg.get('num_channels', 3)),
                     embed_dim=int(cfg['embed_dim']), depths=tuple(cfg['depths']),
                     num_heads=tuple(cfg['num_heads']), window_size=int(cfg['window_size']),
                     mlp_ratio=float(cfg.get('mlp_ratio', 4.0)), drop_path_rate=0.0)
    if not v1:
        # transformers reads entry i for stage i: its default (0, 0, 0, 0) serves fewer stages too
        pretrained = list(cfg.get('pretrained_window_sizes') or [0] * len(cfg['depths']))
        overrides['pretrained_window_sizes'] = tuple(pretrained[:len(cfg['depths'])])
    return ('swin_tiny_patch4_window7_224' if v1 else 'swinv2_tiny_window8_256'), overrides


# backbone_config model_type of a UperNet -> how its Hugging Face backbone runs: Swinv2Backbone pads
# before the cyclic shift and clips windows, with no stage output norms; SwinBackbone pads and never
# clips (as mmsegmentation), with output norms (hidden_states_norms)
HF_UPERNET_BACKBONES = {'swinv2': dict(window_padding='hf', out_norms=False),
                        'swin': dict(window_padding='mmseg', out_norms=True)}
HF_STAGES = ['stage1', 'stage2', 'stage3', 'stage4']


def _hf_upernet(cfg: Dict[str, Any], path: str) -> Tuple[str, Dict[str, Any]]:
    """(segmentation model name, create_model overrides) of an UperNetConfig on a Swin(v2) backbone."""
    backbone = cfg.get('backbone_config') or {}
    kind = backbone.get('model_type')
    if kind not in HF_UPERNET_BACKBONES:
        raise ValueError(f'{os.path.join(path, CONFIG)}: an UperNet on a {kind!r} backbone; this package reads '
                         f'UperNets on {", ".join(HF_UPERNET_BACKBONES)} backbones (backbone_config.model_type)')
    base, overrides = _hf_swin(backbone, path, v1=kind == 'swin')
    problems = []
    stages = HF_STAGES[:len(backbone['depths'])]
    if backbone.get('out_features') not in (None, stages):
        problems.append(f'backbone out_features={backbone["out_features"]} (the head here takes all of {stages})')
    aux = bool(cfg.get('use_auxiliary_head', True))
    if aux and (int(cfg.get('auxiliary_num_convs', 1)) != 1 or int(cfg.get('auxiliary_kernel_size', 3)) != 3
                or cfg.get('auxiliary_concat_input', False)):
        problems.append('an auxiliary head other than one 3x3 conv without concat_input')
    _unsupported(os.path.join(path, CONFIG), problems)
    overrides.update(HF_UPERNET_BACKBONES[kind], strict_img_size=False,
                     head_channels=int(cfg.get('hidden_size', 512)),
                     pool_scales=tuple(int(s) for s in cfg.get('pool_scales', (1, 2, 3, 6))),
                     aux_channels=int(cfg.get('auxiliary_channels', 256)) if aux else 0)
    return 'upernet_' + base, overrides


# model_type -> (config.json -> (base name, overrides), task, the classifier's weight: its rows are
# the classes)
HF_MODEL_TYPES: Dict[str, Tuple[Callable, str, str]] = {
    'swinv2': (lambda cfg, path: _hf_swin(cfg, path, v1=False), 'classification', 'classifier.weight'),
    'swin': (lambda cfg, path: _hf_swin(cfg, path, v1=True), 'classification', 'classifier.weight'),
    'upernet': (_hf_upernet, 'segmentation', 'decode_head.classifier.weight'),
}


def _hf_labels(cfg: Dict[str, Any], num_classes: int) -> Optional[Tuple[str, ...]]:
    """id2label in index order; None for transformers' placeholders (LABEL_0, ...) or a mismatch."""
    id2label = cfg.get('id2label') or {}
    try:
        labels = [id2label[k] for k in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if len(labels) != num_classes or all(name == f'LABEL_{i}' for i, name in enumerate(labels)):
        return None
    return tuple(str(name) for name in labels)


def _size_hw(size, what: str, path: str) -> Tuple[Optional[Tuple[int, int]], Optional[int]]:
    """A processor size -> ((height, width) or None, shortest_edge or None)."""
    if isinstance(size, (int, float)):
        return (int(size), int(size)), None
    if isinstance(size, dict) and 'height' in size and 'width' in size:
        return (int(size['height']), int(size['width'])), None
    if isinstance(size, dict) and 'shortest_edge' in size and len(size) == 1:
        return None, int(size['shortest_edge'])
    raise ValueError(f'{path}: {what}={size!r} is not a size this package reads ({{"height", "width"}}, '
                     f'{{"shortest_edge"}} or an int)')


def _hf_preprocessing(folder: str, model) -> Dict[str, Any]:
    """PretrainedInfo fields from preprocessor_config.json (ViTImageProcessor and its kin)."""
    path = os.path.join(folder, HF_PROCESSOR)
    if not os.path.isfile(path):
        log.warning('%s has no %s: using %s, ImageNet mean/std, bicubic resize (the Swin hub values)',
                    folder, HF_PROCESSOR, tuple(model.img_size))
        return dict(crop_pct=1.0, crop_mode='squash')
    cfg = _read_json(path)
    out = dict(mean=tuple(cfg.get('image_mean', IMAGENET_MEAN)), std=tuple(cfg.get('image_std', IMAGENET_STD)))
    if not cfg.get('do_normalize', True):
        out.update(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    if cfg.get('do_rescale', True) and abs(float(cfg.get('rescale_factor', 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f'{path}: rescale_factor={cfg["rescale_factor"]} (only 1/255 is supported)')
    if not cfg.get('do_resize', True):
        raise ValueError(f'{path}: do_resize=false: images are not resized, but the model takes '
                         f'{tuple(model.img_size)}; resize them first or set do_resize')
    resample = cfg.get('resample', 2)
    out['interpolation'] = PIL_RESAMPLE.get(resample, str(resample).lower())
    hw, shortest = _size_hw(cfg.get('size', tuple(model.img_size)[0]), 'size', path)
    crop = None
    if cfg.get('do_center_crop', False):
        crop, _ = _size_hw(cfg.get('crop_size'), 'crop_size', path)
    if shortest is not None:       # shorter side to `shortest`, then the centred crop
        crop = crop or (shortest, shortest)
        out.update(input_size=crop, crop_pct=crop[0] / shortest, crop_mode='center')
    elif crop is not None:          # both sides to `size`, then the centred crop
        if abs(crop[0] / hw[0] - crop[1] / hw[1]) > 1e-6:
            raise ValueError(f'{path}: crop_size {crop} is not one fraction of size {hw}')
        out.update(input_size=crop, crop_pct=crop[0] / hw[0], crop_mode='squash')
    else:                           # ViTImageProcessor: both sides to `size`, no crop
        out.update(input_size=hw, crop_pct=1.0, crop_mode='squash')
    return out


def _load_transformers(folder: str):
    cfg = _read_json(os.path.join(folder, CONFIG))
    model_type = cfg.get('model_type')
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f'{folder}: a transformers model of type {model_type!r}; this package reads '
                         f'{", ".join(HF_MODEL_TYPES)}')
    to_overrides, task, classifier = HF_MODEL_TYPES[model_type]
    base, overrides = to_overrides(cfg, folder)
    sd = read_hub_weights(folder)
    num_classes = int(sd[classifier].shape[0]) if classifier in sd else 0  # headless: 0
    model = create_model(base, num_classes=num_classes, **overrides)
    variables = _load_weights(sd, model, 'hf')
    info = _default_info(model, labels=_hf_labels(cfg, num_classes), task=task, source='transformers',
                         **_hf_preprocessing(folder, model))
    return model, variables, _check_size(info, model, folder)


def _check_size(info: PretrainedInfo, model, folder: str) -> PretrainedInfo:
    """`info`, once it fits the model and names a preprocessing the Pillow transform implements."""
    if tuple(info.input_size) != tuple(model.img_size) and model.strict_img_size:
        raise ValueError(f'{folder}: the preprocessing makes {tuple(info.input_size)} inputs but the model '
                         f'takes {tuple(model.img_size)}; the files disagree')
    if info.crop_mode not in CROP_MODES:
        raise ValueError(f'{folder}: crop_mode {info.crop_mode!r} is not implemented here (only '
                         f'{", ".join(CROP_MODES)})')
    if info.interpolation not in INTERPOLATIONS:
        raise ValueError(f'{folder}: interpolation {info.interpolation!r} is not one of {", ".join(INTERPOLATIONS)}')
    if not float(info.crop_pct) > 0:
        raise ValueError(f'{folder}: crop_pct {info.crop_pct} is not positive')
    return info


# ----------------------------------------------------------------------------------------------
# timm folders
# ----------------------------------------------------------------------------------------------

# timm constructor arguments -> create_model overrides (None: read, nothing to set)
TIMM_ARGS = {'img_size': 'img_size', 'patch_size': 'patch_size', 'in_chans': 'in_chans',
             'num_classes': 'num_classes', 'embed_dim': 'embed_dim', 'depths': 'depths',
             'num_heads': 'num_heads', 'window_size': 'window_size', 'mlp_ratio': 'mlp_ratio',
             'pretrained_window_sizes': 'pretrained_window_sizes', 'strict_img_size': 'strict_img_size',
             'drop_rate': None, 'proj_drop_rate': None, 'attn_drop_rate': None, 'drop_path_rate': None}
# arguments whose value must be this (the only one this package implements)
TIMM_FIXED = {'global_pool': 'avg', 'qkv_bias': True, 'act_layer': 'gelu', 'always_partition': False,
              'dynamic_img_size': False}


def _timm_overrides(model_args: Dict[str, Any], path: str) -> Dict[str, Any]:
    problems, overrides = [], {}
    for key, value in model_args.items():
        if key in TIMM_FIXED:
            if value != TIMM_FIXED[key]:
                problems.append(f'{key}={value!r} (only {TIMM_FIXED[key]!r})')
        elif key not in TIMM_ARGS:
            problems.append(f'model_args {key}={value!r} (unknown here)')
        elif TIMM_ARGS[key] is not None:
            overrides[TIMM_ARGS[key]] = tuple(value) if isinstance(value, list) else value
    _unsupported(path, problems)
    return overrides


def _timm_labels(cfg: Dict[str, Any], num_classes: int) -> Optional[Tuple[str, ...]]:
    pcfg = cfg.get('pretrained_cfg') or {}
    names = cfg.get('label_names', pcfg.get('label_names'))
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not names or len(names) != num_classes:
        return None
    described = cfg.get('label_descriptions', pcfg.get('label_descriptions')) or {}
    return tuple(str(described.get(n, n)) for n in names)


def _load_timm(folder: str):
    path = os.path.join(folder, CONFIG)
    cfg = _read_json(path)
    try:
        name = resolve_name(str(cfg['architecture']))
    except ValueError as e:
        raise ValueError(f'{path}: architecture {cfg["architecture"]!r} is not a Swin / SwinV2 model this '
                         f'package implements ({e})') from e
    overrides = _timm_overrides(dict(cfg.get('model_args') or {}), path)
    overrides['num_classes'] = int(cfg.get('num_classes', overrides.get('num_classes', 1000)))
    model = create_model(name, **{**overrides, 'drop_path_rate': 0.0})
    variables = _load_weights(read_hub_weights(folder), model, 'timm')
    pcfg = cfg.get('pretrained_cfg') or {}
    size = tuple(pcfg.get('input_size', (3, *model.img_size)))[-2:]
    info = _default_info(model, labels=_timm_labels(cfg, model.num_classes), source='timm',
                         input_size=tuple(int(s) for s in size),
                         **{k: (tuple(pcfg[k]) if isinstance(pcfg[k], list) else pcfg[k])
                            for k in ('mean', 'std', 'crop_pct', 'interpolation', 'crop_mode') if k in pcfg})
    return model, variables, _check_size(info, model, folder)


# ----------------------------------------------------------------------------------------------
# This project's converted checkpoints and training runs
# ----------------------------------------------------------------------------------------------

def _load_converted(folder: str):
    from swinv2_jax.weights.converted import load_converted
    model, variables = load_converted(folder)
    return model, variables, _check_size(_default_info(model, source='converted'), model, folder)


def _training_workdir(path: str) -> Optional[str]:
    if os.path.isdir(os.path.join(path, 'checkpoints')):
        return path
    if os.path.basename(os.path.normpath(path)) == 'checkpoints' and os.path.isdir(path):
        return os.path.dirname(os.path.normpath(path))
    return None


def _load_training(path: str):
    from swinv2_jax.train import init_from, objectives   # ml_collections, optax: only for runs
    params, meta = init_from.read_training_run(_training_workdir(path))
    objective = objectives.for_meta(meta)
    model = objective.model_from_meta(meta)
    config = meta.get('config') or {}
    if isinstance(config, str):
        config = json.loads(config)
    aug = config.get('aug') or {}
    changes = {k: (tuple(aug[k]) if isinstance(aug[k], list) else aug[k])
               for k in ('mean', 'std', 'crop_pct', 'interpolation') if k in aug}
    sized = model if hasattr(model, 'img_size') else model.encoder   # SimMIM: its encoder's sizes
    if objective.NAME == 'segmentation':   # whole images squashed to the model's size, not cropped
        changes.update(crop_pct=1.0, crop_mode='squash')
    info = _default_info(sized, task=objective.NAME, source='training', **changes)
    return model, {'params': params, **_training_stats(_training_workdir(path), model)}, _check_size(info, sized, path)


def _training_stats(workdir: str, model) -> Dict[str, Any]:
    """{'batch_stats': ...} of a run whose model has BatchNorm statistics (UperNet), else {}."""
    import jax
    from flax.core import unfreeze
    from swinv2_jax.models import abstract_variables
    from swinv2_jax.train.checkpointing import Checkpointer
    abstract = abstract_variables(model)
    if 'batch_stats' not in abstract:
        return {}
    ckpt = Checkpointer(workdir, read_only=True, async_save=False)
    try:
        stats = ckpt.restore_params(abstract['batch_stats'], key='batch_stats')
    finally:
        ckpt.close()
    return {'batch_stats': unfreeze(jax.device_get(stats))}


def _is_converted(path: str) -> bool:
    cfg = os.path.join(path, CONFIG)
    return os.path.isfile(cfg) and os.path.isdir(os.path.join(path, 'variables'))


def _config_has(path: str, key: str) -> bool:
    cfg = os.path.join(path, CONFIG)
    if not os.path.isfile(cfg):
        return False
    c = _read_json(cfg)
    return isinstance(c, dict) and key in c


# kind -> (recognise(folder), load(folder) -> (model, variables, info)); the first that recognises wins
SOURCES: Dict[str, Tuple[Callable[[str], bool], Callable]] = {
    'converted': (_is_converted, _load_converted),
    'training': (lambda p: _training_workdir(p) is not None, _load_training),
    'timm': (lambda p: _config_has(p, 'architecture') and not _config_has(p, 'model_type'), _load_timm),
    'transformers': (lambda p: _config_has(p, 'model_type'), _load_transformers),
}


# ----------------------------------------------------------------------------------------------
# Hub names: the local cache only
# ----------------------------------------------------------------------------------------------

HUB_NAME = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


def _hf_cache_dirs() -> List[str]:
    home = os.environ.get('HF_HOME', os.path.join(os.path.expanduser('~'), '.cache', 'huggingface'))
    return [d for d in (os.environ.get('HF_HUB_CACHE'), os.environ.get('HUGGINGFACE_HUB_CACHE'),
                        os.path.join(home, 'hub')) if d]


def cached_snapshot(name: str) -> Optional[str]:
    """The folder of hub repository `name` in the local Hugging Face cache (refs/main's snapshot,
    else the newest), or None."""
    repo = 'models--' + name.replace('/', '--')
    for cache in _hf_cache_dirs():
        snapshots = os.path.join(cache, repo, 'snapshots')
        if not os.path.isdir(snapshots):
            continue
        ref = os.path.join(cache, repo, 'refs', 'main')
        if os.path.isfile(ref):
            with open(ref) as f:
                candidate = os.path.join(snapshots, f.read().strip())
            if os.path.isdir(candidate):
                return candidate
        found = [os.path.join(snapshots, d) for d in os.listdir(snapshots)]
        if found:
            return max(found, key=os.path.getmtime)
    return None


def resolve_source(path) -> str:
    """A local folder for `path`: itself, or a hub name's snapshot in the local cache."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.exists(path):
        return path
    if HUB_NAME.match(path):
        snapshot = cached_snapshot(path)
        if snapshot is not None:
            return snapshot
        local = path.split('/')[-1]
        raise FileNotFoundError(
            f'{path!r} is not a local folder, and nothing is downloaded here. Download the hub '
            f'repository first, then pass its folder:\n'
            f'  hf download {path} --local-dir ./{local}     (or: huggingface-cli download {path} '
            f'--local-dir ./{local})\n'
            f'  python -m swinv2_jax.predict ./{local} IMAGES...')
    raise FileNotFoundError(f'nothing at {path}')


def from_pretrained(path) -> Tuple[Any, Dict[str, Any], PretrainedInfo]:
    """`(model, variables, info)` from a folder: a transformers or timm hub folder, a converted
    checkpoint of this project, or a train.py workdir (module docstring). The architecture, image
    size, windows and pretrained windows come from the files; `info` holds the class names and
    the evaluation preprocessing. Raises FileNotFoundError for a missing folder or a hub name not in
    the local cache (saying how to download it), ValueError for files this package cannot read
    or represent (naming what and where)."""
    folder = resolve_source(path)
    if os.path.isfile(folder):
        raise ValueError(f'{folder} is a file; from_pretrained takes a folder (a hub download, a converted '
                         f'checkpoint or a training workdir). For a single PyTorch file name its model: '
                         f'python -m swinv2_jax.convert --model NAME {folder} OUT_DIR')
    for kind, (recognise, load) in SOURCES.items():
        if recognise(folder):
            log.info('reading %s as a %s folder', folder, kind)
            return load(folder)
    raise ValueError(f'{folder} is none of: a transformers or timm hub folder ({CONFIG} with "model_type" or '
                     f'"architecture"), a converted checkpoint ({CONFIG} + variables/), a training workdir '
                     f'(checkpoints/)')


__all__ = ['HF_MODEL_TYPES', 'PretrainedInfo', 'SOURCES', 'cached_snapshot', 'from_pretrained', 'read_hub_weights',
           'resolve_source']
