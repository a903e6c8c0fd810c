"""Fine-tuning initialisation: pretrained parameters into a freshly initialised model.

Sources (`config.init_from`) of a classifier:
- a converted Orbax directory (`python -m swinv2_jax.convert ...`: config.json + variables/),
- a PyTorch file (.pth/.pt/.bin/.safetensors; official, SimMIM, timm or Hugging Face names),
- a training run of this project (its workdir, or its checkpoints/ directory), rebuilt from its
  meta by its objective (swinv2_jax/train/objectives/); of a run of another objective the
  objective's `backbone_params` are taken (of a SimMIM run: the encoder, its mask token and
  decoder left out, and logged).
A target of an objective with its own PyTorch files (`load_torch`: SimMIM, continued pre-training)
takes all of a source of that objective instead: a run of it, or such a file.

Every source is read at its own architecture (its class count included), then merged into the
target's initial parameters by path:
- a leaf with the same path and shape is transferred;
- the classifier (`head/*`) is re-initialised when the class counts differ (or the source has no
  head), unless `head_map` gives the source class of each target class (the official 22K->1K
  fine-tune keeps the ImageNet-1K rows of the 22K head: `map22kto1k.txt`);
- any other missing or mis-shaped leaf is an error listing them all (weights.tree_diff): window and resolution
  changes need nothing in the CPB modes (the position bias is the CPB network of the
  coordinates); a Swin V1 position bias table is first resized bicubically to the target's
  windows (its source window taken as square, as the official recipe does); so a mismatch
  elsewhere means the wrong model.
What was transferred and re-initialised is logged and returned.
"""
from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models import SwinTransformerV2, abstract_variables
from swinv2_jax.train import objectives
from swinv2_jax.weights import torch_layouts, transfer, tree_diff

Path = Tuple[str, ...]
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors')


@dataclasses.dataclass
class InitReport:
    source: str
    kind: str                                   # 'converted', 'torch', 'training', '<objective>-training'
    transferred: List[str]
    reinitialised: List[str]
    dropped: List[str]                          # source leaves with no place in the target
    head_mapped: bool = False
    resized: List[str] = dataclasses.field(default_factory=list)  # V1 tables moved to other windows

    def summary(self) -> str:
        lines = [f'init_from {self.source} ({self.kind}): transferred {len(self.transferred)} tensors']
        if self.reinitialised:
            lines.append(f'  re-initialised ({len(self.reinitialised)}): ' + ', '.join(self.reinitialised))
        if self.dropped:
            lines.append(f'  not used from the source ({len(self.dropped)}): ' + ', '.join(self.dropped))
        if self.head_mapped:
            lines.append('  head rows taken from the source classes named by init_head_map')
        lines.extend('  ' + line for line in self.resized)
        return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Reading each kind of source at its own architecture
# ----------------------------------------------------------------------------------------------

def _is_converted(path: str) -> bool:
    return os.path.isfile(os.path.join(path, 'config.json')) and os.path.isdir(os.path.join(path, 'variables'))


def _training_dir(path: str) -> Optional[str]:
    """The workdir of a training run at or above `path`, if it is one."""
    from swinv2_jax.train.checkpointing import CHECKPOINT_DIR
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return path
    if os.path.basename(path) == CHECKPOINT_DIR and os.path.isdir(path):
        return os.path.dirname(path)
    return None


def _read_torch(path: str, model: SwinTransformerV2) -> Tuple[Dict, Optional[int]]:
    """Source params from a PyTorch file, at the checkpoint's class count (None: no head)."""
    sd = torch_layouts.read_state_dict(path)
    layout, prefix = torch_layouts.detect_layout(sd)
    classes = None
    for name in torch_layouts.torch_names(('head', 'bias'), layout, prefix):
        if name in sd:
            classes = int(sd[name].shape[0])
    source_model = model.clone(parent=None, num_classes=classes or 0)
    params = torch_layouts.load_torch_weights(sd, source_model, layout=layout)['params']
    simmim_only = sorted(k for k in sd if k.endswith('mask_token') or k.startswith('decoder.'))
    if simmim_only:  # the classifier loader leaves them out: they have no place in a classifier
        logging.info('init_from %s: a SimMIM checkpoint; its encoder is used, not its %s', path,
                     ', '.join(simmim_only))
    return unfreeze(params), classes


def read_source(path: str, model: SwinTransformerV2) -> Tuple[Dict, str]:
    """(params of the source at its own architecture, kind)."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'init_from: nothing at {path}')
    if os.path.isfile(path):
        if not path.endswith(TORCH_SUFFIXES):
            raise ValueError(f'init_from: {path} is a file but not a PyTorch checkpoint '
                             f'({", ".join(TORCH_SUFFIXES)})')
        return _read_torch(path, model)[0], 'torch'
    if _is_converted(path):
        from swinv2_jax.weights.converted import load_converted   # Orbax, only when used
        _, variables = load_converted(path)
        return unfreeze(variables['params']), 'converted'
    workdir = _training_dir(path)
    if workdir is not None:
        params, meta = read_training_run(workdir)
        objective = objectives.for_meta(meta)
        return objective.backbone_params(params, path), _training_kind(objective)
    raise ValueError(f'init_from: {path} is neither a converted checkpoint (config.json + variables/), '
                     f'a training run (checkpoints/) nor a PyTorch file')


def read_training_run(workdir: str) -> Tuple[Dict, Dict]:
    """(params at the run's own architecture, meta) of a training run's latest checkpoint."""
    from swinv2_jax.train.checkpointing import Checkpointer
    ckpt = Checkpointer(workdir, read_only=True, async_save=False)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f'init_from: the training run at {workdir} has no checkpoint yet')
    meta = ckpt.restore_meta()
    source_model = objectives.for_meta(meta).model_from_meta(meta)
    abstract = abstract_variables(source_model)['params']
    params = unfreeze(jax.device_get(ckpt.restore_params(abstract)))
    ckpt.close()
    return params, meta


def _training_kind(objective: ModuleType) -> str:
    """The report's kind of a training-run source: 'training' for a classifier, '<objective>-training'."""
    return 'training' if objective.NAME == objectives.DEFAULT else f'{objective.NAME}-training'


def read_own_objective_source(path: str, model, objective: ModuleType) -> Tuple[Dict, str]:
    """Continued training of `objective` (SimMIM pre-training): all of a PyTorch file of its kind
    (`objective.load_torch`) or of a run of this project with the same objective."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'init_from: nothing at {path}')
    if os.path.isfile(path) and path.endswith(TORCH_SUFFIXES):
        return objective.load_torch(path, model), 'torch'
    workdir = _training_dir(path) if os.path.isdir(path) else None
    if workdir is not None:
        params, meta = read_training_run(workdir)
        source = objectives.for_meta(meta)
        if source is not objective:
            raise ValueError(f'init_from {path}: a {source.NAME} run; continued {objective.NAME} training starts '
                             f'from a {objective.NAME} run or {objective.TORCH_FILES}')
        return params, _training_kind(objective)
    raise ValueError(f'init_from: {path} is neither {objective.TORCH_FILES} ({", ".join(TORCH_SUFFIXES)}) '
                     f'nor a {objective.NAME} training run (checkpoints/)')


# ----------------------------------------------------------------------------------------------
# Merging into the target
# ----------------------------------------------------------------------------------------------

def read_head_map(path: str) -> np.ndarray:
    """Source class indices, one integer per line (the target class of line i is i)."""
    with open(os.path.expanduser(path)) as f:
        return np.asarray([int(line.split()[0]) for line in f if line.strip()], np.int64)


def _is_head(name: str) -> bool:
    return name.startswith('head/')


def merge(target: Dict, source: Dict, head_map: Optional[np.ndarray] = None,
          source_name: str = '', kind: str = '') -> Tuple[Dict, InitReport]:
    """Target params with every matching source leaf transferred; see the module docstring."""
    want, have = tree_diff.flatten(target), tree_diff.flatten(source)
    diff = tree_diff.diff_trees(want, have, ignore=_is_head, given_word='source', expected_word='model')
    body = tree_diff.TreeDiff(missing=[n for n in diff.missing if not _is_head(n)],
                              unexpected=diff.unexpected,
                              misshaped=[m for m in diff.misshaped if not _is_head(m)])
    if body:
        raise ValueError(body.message(f'init_from {source_name}: the source does not fit the model beyond its '
                                      f'head (wrong model name or size?)'))
    out, transferred, reinit = {}, [], []
    head_mapped = False
    for path, init in want.items():
        name, src = tree_diff.path_name(path), have.get(path)
        if src is not None and tuple(np.shape(src)) == tuple(np.shape(init)):
            out[path] = jnp.asarray(src, dtype=init.dtype)
            transferred.append(name)
        elif src is not None and head_map is not None:     # the head (the rest fits, checked above)
            if len(head_map) != init.shape[-1]:
                raise ValueError(f'init_head_map has {len(head_map)} entries for a {init.shape[-1]}-class head')
            out[path] = jnp.asarray(np.take(np.asarray(src), head_map, axis=-1), dtype=init.dtype)
            transferred.append(name + ' (mapped)')
            head_mapped = True
        else:
            out[path] = init
            why = 'absent in the source' if src is None else \
                f'source {list(np.shape(src))}, model {list(np.shape(init))}'
            reinit.append(f'{name} ({why})')
    dropped = sorted(tree_diff.path_name(p) for p in have if p not in want)
    report = InitReport(source_name, kind, transferred, reinit, dropped, head_mapped)
    return traverse_util.unflatten_dict(out), report


def _resize_tables(source: Dict, model: SwinTransformerV2) -> Tuple[Dict, List[str]]:
    """The source with each V1 position bias table resized to `model`'s windows (no-op for CPB)."""
    flat, lines = transfer.resize_tables(traverse_util.flatten_dict(unfreeze(source)), model)
    return traverse_util.unflatten_dict(flat), lines


def load_pretrained(path: str, model, target_params: Dict,
                    head_map_path: str = '') -> Tuple[Dict, InitReport]:
    """(params for `model`, report): `target_params` (its initialisation) with the source merged in.

    A segmentation model (a head on a `backbone`) takes the source into its backbone, read as above
    at the backbone's windows and resolution; its heads keep their initialisation."""
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, SwinTransformerV2):
        return _load_backbone(path, model, backbone, target_params)
    objective = objectives.for_model(model)
    if hasattr(objective, 'load_torch'):   # continued training of its own kind (SimMIM pre-training)
        source, kind = read_own_objective_source(path, model, objective)
        resized = []                       # a SimMIM encoder is V2: CPB, nothing to resize
    else:
        source, kind = read_source(path, model)
        source, resized = _resize_tables(source, model)
    head_map = read_head_map(head_map_path) if head_map_path else None
    params, report = merge(jax.device_get(target_params), source, head_map, path, kind)
    report.resized = resized
    for line in report.summary().splitlines():
        logging.info('%s', line)
    return params, report


def _load_backbone(path: str, model, backbone: SwinTransformerV2, target_params: Dict) -> Tuple[Dict, InitReport]:
    """A segmentation model's params with the source (a classifier, or a segmentation run's backbone)
    in its backbone; a classifier's final norm and head have no place there (reported as unused)."""
    source, kind = read_source(path, backbone)
    source, resized = _resize_tables(source, backbone)
    want = traverse_util.flatten_dict(unfreeze(jax.device_get(target_params['backbone'])))
    flat = traverse_util.flatten_dict(source)
    unused = [p for p in flat if p not in want and p[0] in ('head', 'norm')]
    source = traverse_util.unflatten_dict({p: v for p, v in flat.items() if p not in unused})
    params, report = merge(jax.device_get(target_params['backbone']), source, None, path, kind)
    report.dropped = sorted(report.dropped + [tree_diff.path_name(p) for p in unused])
    report.resized = resized
    heads = sorted(k for k in target_params if k != 'backbone')
    for line in report.summary().splitlines():
        logging.info('%s', line)
    logging.info('init_from %s: into the backbone; initialised, not loaded: %s', path, ', '.join(heads))
    return {**jax.device_get(target_params), 'backbone': params}, report


__all__ = ['InitReport', 'load_pretrained', 'merge', 'read_head_map', 'read_own_objective_source', 'read_source',
           'read_training_run']
