"""Fine-tuning initialisation: pretrained parameters into a freshly initialised model.

Sources (`config.init_from`):
- a converted Orbax directory (`python -m swinv2_jax.convert ...`: config.json + variables/),
- a PyTorch file (.pth/.pt/.bin/.safetensors; official, SimMIM, timm or Hugging Face names),
- a training run of this project (its workdir, or its checkpoints/ directory); of a SimMIM run
  (`objective='simmim'`) the encoder is taken, its mask token and decoder left out (and logged).
A SimMIM target (continued pre-training, `objective='simmim'` with init_from) takes all of a
SimMIM source instead: a SimMIM run, or an official SimMIM / Hugging Face file.

Every source is read at its own architecture (its class count included), then merged into the
target's initial parameters by path:
- a leaf with the same path and shape is transferred;
- the classifier (`head/*`) is re-initialised when the class counts differ (or the source has no
  head), unless `head_map` gives the source class of each target class (the official 22K->1K
  fine-tune keeps the ImageNet-1K rows of the 22K head: `map22kto1k.txt`);
- any other missing or mis-shaped leaf is an error listing them all: window and resolution
  changes need nothing in the CPB modes (the position bias is the CPB network of the
  coordinates); a Swin V1 position bias table is first resized bicubically to the target's
  windows (its source window taken as square, as the official recipe does); so a mismatch
  elsewhere means the wrong model.
What was transferred and re-initialised is logged and returned.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util
from flax.core import unfreeze

from swinv2_jax.models import SwinTransformerV2, abstract_variables, model_from_fields
from swinv2_jax.models.simmim import SimMIM

Path = Tuple[str, ...]
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors')


@dataclasses.dataclass
class InitReport:
    source: str
    kind: str                                   # 'converted', 'torch', 'training'
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


def _name(path: Path) -> str:
    return '/'.join(path)


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
    from swinv2_jax import convert
    sd = convert.read_state_dict(path)
    layout, prefix = convert.detect_layout(sd)
    classes = None
    for name in convert.torch_names(('head', 'bias'), layout, prefix):
        if name in sd:
            classes = int(sd[name].shape[0])
    source_model = model.clone(parent=None, num_classes=classes or 0)
    params = convert.load_torch_weights(sd, source_model, layout=layout)['params']
    simmim_only = sorted(k for k in sd if k.endswith('mask_token') or k.startswith('decoder.'))
    if simmim_only:  # convert.py leaves them out: they have no place in a classifier
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
        from swinv2_jax.checkpoints import load_converted
        _, variables = load_converted(path)
        return unfreeze(variables['params']), 'converted'
    workdir = _training_dir(path)
    if workdir is not None:
        params, meta = read_training_run(workdir)
        if meta.get('objective') == 'simmim':
            return simmim_encoder(params, path), 'simmim-training'
        return params, 'training'
    raise ValueError(f'init_from: {path} is neither a converted checkpoint (config.json + variables/), '
                     f'a training run (checkpoints/) nor a PyTorch file')


def read_training_run(workdir: str) -> Tuple[Dict, Dict]:
    """(params at the run's own architecture, meta) of a training run's latest checkpoint."""
    from swinv2_jax.train.checkpointing import Checkpointer
    ckpt = Checkpointer(workdir, read_only=True, async_save=False)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f'init_from: the training run at {workdir} has no checkpoint yet')
    meta = ckpt.restore_meta()
    if meta.get('objective') == 'simmim':
        from swinv2_jax.train import simmim as simmim_objective
        source_model = simmim_objective.model_from_meta(meta)
    else:
        source_model = model_from_fields(meta['model'])
    abstract = abstract_variables(source_model)['params']
    params = unfreeze(jax.device_get(ckpt.restore_params(abstract)))
    ckpt.close()
    return params, meta


def read_simmim_source(path: str, model: SimMIM) -> Tuple[Dict, str]:
    """Continued SimMIM pre-training: encoder, mask token and decoder of a PyTorch SimMIM file
    (official or Hugging Face) or of a SimMIM run of this project."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'init_from: nothing at {path}')
    if os.path.isfile(path) and path.endswith(TORCH_SUFFIXES):
        from swinv2_jax.convert_simmim import load_simmim_weights
        return unfreeze(load_simmim_weights(path, model)['params']), 'torch'
    workdir = _training_dir(path) if os.path.isdir(path) else None
    if workdir is not None:
        params, meta = read_training_run(workdir)
        if meta.get('objective') != 'simmim':
            raise ValueError(f'init_from {path}: a classification run; continued SimMIM pre-training starts '
                             f'from a SimMIM run or an official SimMIM / Hugging Face '
                             f'Swinv2ForMaskedImageModeling file')
        return params, 'simmim-training'
    raise ValueError(f'init_from: {path} is neither a PyTorch SimMIM checkpoint ({", ".join(TORCH_SUFFIXES)}) '
                     f'nor a SimMIM training run (checkpoints/)')


def simmim_encoder(params: Dict, source_name: str = '') -> Dict:
    """The encoder of SimMIM parameters ({'encoder': ..., 'decoder': ...}) as classifier
    parameters: `encoder/*` without the pre-training-only mask token; the decoder is dropped."""
    if 'encoder' not in params:
        raise ValueError(f'init_from {source_name}: a SimMIM run without encoder/ parameters '
                         f'(top-level: {sorted(params)})')
    encoder = dict(params['encoder'])
    dropped = (['encoder/mask_token'] if encoder.pop('mask_token', None) is not None else []) + [
        'decoder/' + '/'.join(p) for p in traverse_util.flatten_dict(params.get('decoder', {}))]
    logging.info('init_from %s: a SimMIM run; taking its encoder, leaving out (pre-training only): %s',
                 source_name, ', '.join(dropped) or 'nothing')
    return encoder


# ----------------------------------------------------------------------------------------------
# Merging into the target
# ----------------------------------------------------------------------------------------------

def read_head_map(path: str) -> np.ndarray:
    """Source class indices, one integer per line (the target class of line i is i)."""
    with open(os.path.expanduser(path)) as f:
        return np.asarray([int(line.split()[0]) for line in f if line.strip()], np.int64)


def merge(target: Dict, source: Dict, head_map: Optional[np.ndarray] = None,
          source_name: str = '', kind: str = '') -> Tuple[Dict, InitReport]:
    """Target params with every matching source leaf transferred; see the module docstring."""
    want = traverse_util.flatten_dict(unfreeze(target))
    have = traverse_util.flatten_dict(unfreeze(source))
    out, transferred, reinit, problems = {}, [], [], []
    head_mapped = False
    for path, init in want.items():
        src = have.get(path)
        if src is not None and tuple(np.shape(src)) == tuple(np.shape(init)):
            out[path] = jnp.asarray(src, dtype=init.dtype)
            transferred.append(_name(path))
        elif path[0] == 'head':
            if src is not None and head_map is not None:
                if len(head_map) != init.shape[-1]:
                    raise ValueError(f'init_head_map has {len(head_map)} entries for a {init.shape[-1]}-'
                                     f'class head')
                out[path] = jnp.asarray(np.take(np.asarray(src), head_map, axis=-1), dtype=init.dtype)
                transferred.append(_name(path) + ' (mapped)')
                head_mapped = True
            else:
                out[path] = init
                why = 'absent in the source' if src is None else \
                    f'source {list(np.shape(src))}, model {list(np.shape(init))}'
                reinit.append(f'{_name(path)} ({why})')
        else:
            out[path] = init
            problems.append(f'{_name(path)}: ' + ('missing in the source' if src is None else
                            f'source {list(np.shape(src))}, model {list(np.shape(init))}'))
    dropped = sorted(_name(p) for p in have if p not in want)
    bad_drop = [d for d in dropped if not d.startswith('head/')]
    if problems or bad_drop:
        raise ValueError(f'init_from {source_name}: the source does not fit the model beyond its head '
                         f'(wrong model name or size?):\n  ' + '\n  '.join(
                             problems + [f'{d}: not in the model' for d in bad_drop]))
    report = InitReport(source_name, kind, transferred, reinit, dropped, head_mapped)
    return traverse_util.unflatten_dict(out), report


def _resize_tables(source: Dict, model: SwinTransformerV2) -> Tuple[Dict, List[str]]:
    """The source with each V1 position bias table resized to `model`'s windows (no-op for CPB)."""
    from swinv2_jax.weights import transfer
    flat = traverse_util.flatten_dict(unfreeze(source))
    shapes = {p: s.shape for p, s in traverse_util.flatten_dict(abstract_variables(model)['params']).items()}
    resized, lines = transfer.transfer_tables(flat, shapes, transfer.table_windows(model))
    if not resized:
        return source, lines
    flat.update(resized)
    return traverse_util.unflatten_dict(flat), lines


def load_pretrained(path: str, model: SwinTransformerV2, target_params: Dict,
                    head_map_path: str = '') -> Tuple[Dict, InitReport]:
    """(params for `model`, report): `target_params` (its initialisation) with the source merged in."""
    if isinstance(model, SimMIM):      # objective 'simmim': continued pre-training
        source, kind = read_simmim_source(path, model)
        resized = []                   # a SimMIM encoder is V2: CPB, nothing to resize
    else:
        source, kind = read_source(path, model)
        source, resized = _resize_tables(source, model)
    head_map = read_head_map(head_map_path) if head_map_path else None
    params, report = merge(jax.device_get(target_params), source, head_map, path, kind)
    report.resized = resized
    for line in report.summary().splitlines():
        logging.info('%s', line)
    return params, report


__all__ = ['InitReport', 'load_pretrained', 'merge', 'read_head_map', 'read_simmim_source', 'read_source',
           'read_training_run', 'simmim_encoder']
