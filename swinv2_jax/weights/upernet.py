"""UperNet weights to and from PyTorch: Hugging Face `UperNetForSemanticSegmentation` and
mmsegmentation's UperNet (Swin-Transformer-Semantic-Segmentation's official-Swin backbone names;
on load also mmsegmentation's own Swin names, `MMSEG_NATIVE_RULES`).

    this project                       hf                                      mmseg
    backbone/...                       backbone.<Hugging Face Swin(v2) names>  backbone.<official names>
    out_norms_{i}                      backbone.hidden_states_norms.stage{i+1} backbone.norm{i}
    decode_head/psp_modules_{i}/...    decode_head.psp_modules.{i}.1.conv|batch_norm   ....1.conv|bn
    decode_head/lateral_convs_{i}, fpn_convs_{i}, bottleneck, fpn_bottleneck           (likewise)
    decode_head/classifier             decode_head.classifier                  decode_head.conv_seg
    auxiliary_head/convs_0, classifier auxiliary_head.convs.0, .classifier     ...convs.0, .conv_seg
    batch_stats .../bn/mean, var       ....running_mean, running_var (num_batches_tracked ignored)

The backbone's names come from `torch_layouts` (its rule tables), the head's from `HEAD_RULES`;
mismatches are reported through `tree_diff.diff_trees`, all at once.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models import abstract_variables
from swinv2_jax.models.upernet import UperNet
from swinv2_jax.weights import torch_layouts
from swinv2_jax.weights.torch_layouts import Rule, _apply
from swinv2_jax.weights.tree_diff import diff_trees

log = logging.getLogger(__name__)

LAYOUTS = ('hf', 'mmseg')
Path = Tuple[str, ...]

# The head's path (collection dropped, joined with '.') -> PyTorch name, per layout.
_COMMON_HEAD_RULES: List[Rule] = [
    (r'psp_modules_(\d+)\.', r'psp_modules.\1.1.'),         # PPM block i = [AdaptiveAvgPool2d, ConvModule]
    (r'(lateral_convs|fpn_convs|convs)_(\d+)\.', r'\1.\2.'),  # flax list index -> ModuleList index
    (r'\.(kernel|scale)$', '.weight'),
    (r'\.mean$', '.running_mean'),
    (r'\.var$', '.running_var'),
]
HEAD_RULES: Dict[str, List[Rule]] = {
    'hf': [(r'^out_norms_(\d+)\.', lambda m: f'backbone.hidden_states_norms.stage{int(m.group(1)) + 1}.'),
           (r'\.bn\.', '.batch_norm.'), *_COMMON_HEAD_RULES],
    'mmseg': [(r'^out_norms_(\d+)\.', r'backbone.norm\1.'), (r'\.classifier\.', '.conv_seg.'),
              *_COMMON_HEAD_RULES],
}
# The backbone: (torch_layouts layout, Hugging Face prefix, prefix of the result)
BACKBONE_LAYOUTS: Dict[str, Tuple[str, str, str]] = {
    'hf': ('hf', 'backbone.', ''),
    'mmseg': ('official', '', 'backbone.'),
}
# Names as read, canonicalised first: transformers >= 5 keeps a Swin V1 backbone under
# `backbone.swin.` with its renamed modules in memory; the hub files use the names above.
ALIASES_ON_LOAD: Dict[str, List[Rule]] = {
    'hf': [(r'^backbone\.swin\.', 'backbone.'), *torch_layouts.HF_V1_IN_MEMORY],
    'mmseg': [],
}
# mmsegmentation's own Swin (`mmseg.models.backbones.SwinTransformer`, which its released ADE20K
# checkpoints use) -> the official names above; its patch merging is an `nn.Unfold`, whose channel
# order `unfold_to_official` undoes (the inverse of mmdetection's `swin_converter`).
MMSEG_NATIVE_RULES: List[Rule] = [
    (r'^backbone\.patch_embed\.projection\.', 'backbone.patch_embed.proj.'),
    (r'^backbone\.stages\.', 'backbone.layers.'),
    (r'\.attn\.w_msa\.', '.attn.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]


def unfold_to_official(name: str, value: np.ndarray) -> np.ndarray:
    """A patch-merging weight in `nn.Unfold` channel order (c, then the 2x2 offsets) -> the
    official order (the offsets x0, x1, x2, x3, then c); other tensors unchanged."""
    if '.downsample.' not in name:
        return value
    if name.endswith('reduction.weight'):
        out, cin = value.shape
        return value.reshape(out, cin // 4, 4)[:, :, [0, 2, 1, 3]].transpose(0, 2, 1).reshape(out, cin)
    if name.endswith(('norm.weight', 'norm.bias')):
        return value.reshape(-1, 4)[:, [0, 2, 1, 3]].T.reshape(-1)
    return value


def from_mmseg_native(sd: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A state dict with mmsegmentation's own Swin names in the official names (unchanged when it
    has none)."""
    if not any(k.startswith('backbone.stages.') for k in sd):
        return dict(sd)
    out = {}
    for k, v in sd.items():
        name = _apply(MMSEG_NATIVE_RULES, k)
        out[name] = unfold_to_official(name, np.asarray(v))
    return out


# Keys a checkpoint may hold that the model never loads (besides torch_layouts.IGNORED_BUFFERS)
IGNORED = (r'\.num_batches_tracked$',
           r'^backbone\.layernorm\.',     # transformers >= 5 SwinBackbone's unused final norm
           r'^backbone\.norm\.')          # a classification backbone's final norm: not a stage output


def torch_names(collection: str, path: Path, layout: str) -> List[str]:
    """The PyTorch key(s) of one variable (`collection` 'params' or 'batch_stats') in a layout."""
    if layout not in LAYOUTS:
        raise ValueError(f'unknown UperNet layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')
    if path[0] == 'backbone':
        inner, prefix, outer = BACKBONE_LAYOUTS[layout]
        return [outer + n for n in torch_layouts.torch_names(path[1:], inner, prefix)]
    del collection  # params and running statistics share one name space in PyTorch
    return [_apply(HEAD_RULES[layout], '.'.join(path))]


def _expected(model: UperNet) -> Dict[Tuple[str, Path], Any]:
    """{(collection, path): ShapeDtypeStruct} of every variable the model has."""
    out = {}
    for collection, tree in abstract_variables(model).items():
        for path, spec in traverse_util.flatten_dict(tree).items():
            out[(collection, path)] = spec
    return out


def detect_layout(keys) -> str:
    keys = list(keys)
    if any(k.startswith('decode_head.') and '.conv_seg.' in k for k in keys):
        return 'mmseg'
    if any(k.startswith('decode_head.classifier.') for k in keys):
        return 'hf'
    raise ValueError('cannot tell the layout of this state dict: it has neither Hugging Face UperNet names '
                     '(decode_head.classifier.*) nor mmsegmentation ones (decode_head.conv_seg.*); is it a '
                     f'segmentation checkpoint? (first keys: {keys[:5]})')


def _is_ignored(key: str, model: UperNet) -> bool:
    if key.endswith(torch_layouts.IGNORED_BUFFERS) or any(re.search(p, key) for p in IGNORED):
        return True
    return not model.aux_channels and key.startswith('auxiliary_head.')  # no auxiliary head: dropped


def _hints(diff, sd, layout: str, model: UperNet) -> List[str]:
    hints = []
    bias = torch_names('params', ('decode_head', 'classifier', 'bias'), layout)[0]
    if any(m.startswith(bias + ':') for m in diff.misshaped):
        classes = sd[bias].shape[0]
        hints.append(f'the classifier differs: the checkpoint has {classes} classes, the model '
                     f'{model.num_classes}; load it with num_classes={classes} (create_model(name, '
                     f'num_classes={classes})), then start new classifiers for your classes with '
                     f'swinv2_jax.weights.upernet.reinit_classifiers(variables, create_model(name, '
                     f'num_classes={model.num_classes}), rng)')
    norms = [n for n in diff.missing if 'hidden_states_norms' in n or re.match(r'backbone\.norm\d', n)]
    if norms:
        hints.append('the checkpoint has no output norms (Hugging Face Swinv2Backbone has none): build the '
                     'model with out_norms=False')
    elif any('hidden_states_norms' in n or re.match(r'backbone\.norm\d', n) for n in diff.unexpected):
        hints.append('the checkpoint has output norms: build the model with out_norms=True')
    if any(n.startswith('auxiliary_head.') for n in diff.missing):
        hints.append('the checkpoint has no auxiliary head: build the model with aux_channels=0')
    if diff.missing or diff.unexpected or any('classifier' not in m and 'conv_seg' not in m for m in diff.misshaped):
        hints.append('check that the backbone matches the checkpoint (embed_dim, depths, num_heads, V1 or V2) '
                     'and that the layout (detected or given) is right')
    return hints


def load_torch_weights(src, model: UperNet, layout: Optional[str] = None) -> Dict[str, Any]:
    """Variables `{"params": ..., "batch_stats": ...}` for a `UperNet` from a PyTorch state dict
    (a path or a mapping; see `torch_layouts.read_state_dict`) in the 'hf' or 'mmseg' layout
    (detected when None). A Swin V1 position bias table saved for another window is resized as
    `torch_layouts.load_torch_weights` does. Raises ValueError listing every mismatch at once."""
    sd = torch_layouts.read_state_dict(src)
    layout = detect_layout(sd) if layout is None else layout
    if layout not in LAYOUTS:
        raise ValueError(f'unknown UperNet layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')
    sd = {_apply(ALIASES_ON_LOAD[layout], k): v for k, v in sd.items()}
    if layout == 'mmseg':
        sd = from_mmseg_native(sd)
    expected = _expected(model)
    names = {key: torch_names(key[0], key[1], layout) for key in expected}
    backbone_names = {key[1][1:]: n for key, n in names.items() if key[1][0] == 'backbone'}
    sd, transfer_log = torch_layouts._resize_tables(sd, model.backbone, backbone_names)
    want = {name: jax.ShapeDtypeStruct(shape, spec.dtype)
            for key, spec in expected.items()
            for name, shape in zip(names[key], torch_layouts._torch_shapes(key[1], spec.shape, len(names[key])))}
    diff = diff_trees(want, sd, ignore=lambda k: _is_ignored(k, model), given_word='checkpoint', expected_word='model')
    if diff:
        raise ValueError(diff.message(f'the {layout}-layout UperNet checkpoint does not match the model '
                                      f'(backbone embed_dim={model.backbone.embed_dim}, depths={model.backbone.depths}; '
                                      f'num_classes={model.num_classes}, out_norms={model.out_norms}, '
                                      f'aux_channels={model.aux_channels})', _hints(diff, sd, layout, model)))
    out: Dict[str, Dict[Path, Any]] = {}
    for (collection, path), spec in expected.items():
        value = torch_layouts._to_flax(path, [sd[n] for n in names[(collection, path)]])
        out.setdefault(collection, {})[path] = jnp.asarray(value, dtype=spec.dtype)
    log.info('loaded %d %s-layout tensors into UperNet', sum(map(len, names.values())), layout)
    for line in transfer_log:
        log.info('%s', line)
    return {c: traverse_util.unflatten_dict(v) for c, v in out.items()}


def _check_exportable(model: UperNet, layout: str):
    if layout != 'hf':
        return
    v1 = model.backbone.is_swin_v1
    if v1 and not model.out_norms:
        raise ValueError("Hugging Face's SwinBackbone has output norms (hidden_states_norms) and this model has "
                         "none; export layout='mmseg', or build the model with out_norms=True")
    if not v1 and model.out_norms:
        raise ValueError("Hugging Face's Swinv2Backbone has no output norms and this model has them "
                         "(out_norms=True); export layout='mmseg', or build and train the model with out_norms=False")


def export_torch_weights(variables: Mapping[str, Any], model: UperNet, layout: str = 'hf') -> Dict[str, np.ndarray]:
    """A PyTorch state dict (name -> numpy array) of a `UperNet`'s variables (params and batch_stats).

    'hf': `UperNetForSemanticSegmentation` with a `Swinv2Backbone` (V2, out_norms=False) loads it with
    strict=True; with a `SwinBackbone` (V1, out_norms=True) the names are the hub files' (transformers
    >= 5 renames them on `from_pretrained`). 'mmseg': the official-Swin backbone names, `norm{i}`,
    `conv_seg`, `bn`, with the relative position index buffers the official Swin registers.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'unknown UperNet layout {layout!r}; valid layouts: {", ".join(LAYOUTS)}')
    _check_exportable(model, layout)
    variables = unfreeze(variables)
    out: Dict[str, np.ndarray] = {}
    for collection in ('params', 'batch_stats'):
        for path, value in traverse_util.flatten_dict(variables.get(collection, {})).items():
            names = torch_names(collection, path, layout)
            arrays = torch_layouts._to_torch(path, np.asarray(value, dtype=np.float32), len(names))
            for name, array in zip(names, arrays):
                out[name] = np.ascontiguousarray(array)
    for stem in ('decode_head', 'auxiliary_head') if layout == 'hf' else ():
        for name in [k for k in out if k.startswith(stem) and k.endswith('.running_mean')]:
            out[name[:-len('running_mean')] + 'num_batches_tracked'] = np.zeros((), np.int64)
    if layout == 'mmseg':
        out.update({'backbone.' + k: v for k, v in torch_layouts._official_buffers(model.backbone).items()
                    if not k.endswith('attn_mask')})  # the segmentation Swin builds its masks per input
    return out


def reinit_classifiers(variables: Mapping[str, Any], model: UperNet, rng: jax.Array) -> Dict[str, Any]:
    """`variables` of a UperNet with other classes, with the classifiers (decode and auxiliary)
    replaced by `model`'s freshly initialised ones: how a checkpoint trained on N classes starts a
    fine-tune on `model.num_classes`. Everything else must fit `model` as it is."""
    variables = unfreeze(variables)
    fresh = jax.jit(model.init)(rng, jnp.zeros((1, *model.img_size, model.in_chans), jnp.float32))
    params = traverse_util.flatten_dict(variables['params'])
    new = traverse_util.flatten_dict(unfreeze(fresh['params']))
    for path in new:
        if 'classifier' in path:
            params[path] = new[path]
    params = {p: v for p, v in params.items() if p in new}  # a dropped auxiliary head
    diff = diff_trees(new, params, given_word='checkpoint', expected_word='model')
    if diff:
        raise ValueError(diff.message('beyond the classifiers, the variables do not fit the model'))
    stats = traverse_util.flatten_dict(variables.get('batch_stats', {}))
    stats = {p: v for p, v in stats.items() if p in traverse_util.flatten_dict(unfreeze(fresh['batch_stats']))}
    return {'params': traverse_util.unflatten_dict(params), 'batch_stats': traverse_util.unflatten_dict(stats)}
