"""Converted SwinV2 weights on disk: an Orbax checkpoint of the variables plus the model's config.

    DIR/
      config.json   {"format": "swinv2_jax.converted/1", "model_name": ..., "model": model_fields(model)}
      variables/    Orbax (StandardCheckpointer) checkpoint of {"params": ...}

`save_converted` writes into a temporary sibling directory and renames it into place at the end, so
an interrupted conversion never leaves a DIR that looks complete. `load_converted` rebuilds the
model from config.json and restores the variables against the shapes and dtypes the model expects.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax.core import unfreeze

from swinv2_jax.models import SwinTransformerV2, abstract_variables, model_fields, model_from_fields
from swinv2_jax.weights import transfer
from swinv2_jax.weights.tree_diff import TreeDiff, diff_trees

log = logging.getLogger(__name__)

FORMAT = 'swinv2_jax.converted/1'
CONFIG_FILE = 'config.json'
VARIABLES_DIR = 'variables'


def _diff(expected: Mapping, stored: Mapping) -> TreeDiff:
    # dtypes too: a converted checkpoint holds the model's parameters exactly, in its param_dtype
    return diff_trees(expected, stored, check_dtype=True, given_word='stored', expected_word='model')


def _as_variables(variables: Mapping) -> Dict[str, Any]:
    variables = unfreeze(variables)
    if 'params' not in variables:  # a bare params tree
        variables = {'params': variables}
    return variables


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------

def _is_nonempty_dir(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path))


def save_converted(directory, variables: Mapping[str, Any], model: SwinTransformerV2,
                   model_name: Optional[str] = None, overwrite: bool = False) -> str:
    """Write `variables` (`{"params": ...}`) for `model` to `directory`; returns its absolute path.

    The checkpoint is assembled in a temporary sibling directory and renamed into place once
    complete. An existing non-empty `directory` is an error unless `overwrite=True` (it is then
    replaced, again only once the new checkpoint is complete).

    Raises:
      ValueError: the variables do not fit the model (every mismatch listed), or `directory` exists.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f'{directory} exists and is not a directory')
    if _is_nonempty_dir(directory) and not overwrite:
        raise ValueError(f'{directory} already exists and is not empty; pass overwrite=True '
                         f'(--overwrite on the command line) to replace it')
    variables = _as_variables(variables)
    diff = _diff(abstract_variables(model), variables)
    if diff:
        raise ValueError(diff.message(f'the variables do not fit the model, nothing was written to {directory}'))
    variables = jax.tree.map(jnp.asarray, variables)

    parent, base = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    tag = f'{os.getpid()}-{uuid.uuid4().hex[:8]}'
    tmp = os.path.join(parent, f'.{base}.tmp-{tag}')
    os.makedirs(tmp)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, VARIABLES_DIR), variables)
            ckptr.wait_until_finished()
        config = {'format': FORMAT, 'model_name': model_name, 'model': model_fields(model)}
        with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
            json.dump(config, f, indent=2)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(directory) and os.listdir(directory):  # overwrite: swap, then delete the old
            old = os.path.join(parent, f'.{base}.old-{tag}')
            os.rename(directory, old)
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)  # replaces an empty directory too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def read_config(directory) -> Dict[str, Any]:
    """The parsed, validated config.json of a converted checkpoint directory."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.exists(directory):
        raise FileNotFoundError(f'no converted checkpoint at {directory}')
    if not os.path.isdir(directory):
        raise ValueError(f'{directory} is not a directory; a converted checkpoint is a directory with '
                         f'{CONFIG_FILE} and {VARIABLES_DIR}/ (python -m swinv2_jax.convert writes one)')
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} is missing: {directory} is not a converted checkpoint (or its '
                                f'conversion did not finish)')
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f'{path} is not valid JSON ({e}); the checkpoint is corrupt') from e
    if not isinstance(config, dict) or config.get('format') != FORMAT:
        got = config.get('format') if isinstance(config, dict) else type(config).__name__
        raise ValueError(f'{path} is not a swinv2_jax converted-checkpoint config (format {got!r}, '
                         f'expected {FORMAT!r})')
    if not isinstance(config.get('model'), dict):
        raise ValueError(f'{path} has no "model" section describing the architecture')
    return config


def load_converted(directory, model: Optional[SwinTransformerV2] = None) -> Tuple[SwinTransformerV2, Dict[str, Any]]:
    """`(model, variables)` from a directory written by `save_converted`.

    With `model`, the stored weights are loaded into that model instead of the stored one: it may
    differ in img_size, window sizes, pretrained windows, strict_img_size and the memory switches
    (a Swin V1 position bias table is resized bicubically to its windows; logged).

    Raises:
      FileNotFoundError: the directory, its config.json or its variables/ are missing.
      ValueError: config.json is corrupt or describes an invalid model, or the stored variables are
        unreadable or do not have the shapes/dtypes the model expects (every mismatch listed).
    """
    directory = os.path.abspath(os.fspath(directory))
    target_model = model
    config = read_config(directory)
    cfg_path = os.path.join(directory, CONFIG_FILE)
    try:
        model = model_from_fields(config['model'])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f'{cfg_path} describes no valid SwinTransformerV2 ({type(e).__name__}: {e})') from e

    var_path = os.path.join(directory, VARIABLES_DIR)
    if not os.path.isdir(var_path):
        raise FileNotFoundError(f'{var_path} is missing: the checkpoint at {directory} has no variables')
    target = abstract_variables(model)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            meta = ckptr.metadata(var_path)
            meta = getattr(meta, 'item_metadata', meta)
            meta = getattr(meta, 'tree', meta)
        except Exception as e:  # orbax/tensorstore raise many types for unreadable files
            raise ValueError(f'cannot read the variables at {var_path} ({type(e).__name__}: {e}); the '
                             f'checkpoint is corrupt or incomplete') from e
        if not isinstance(meta, Mapping):
            raise ValueError(f'cannot read the variables at {var_path}: Orbax finds no readable array '
                             f'metadata there; the checkpoint is corrupt or incomplete')
        diff = _diff(target, dict(meta))
        if diff:
            raise ValueError(diff.message(f'the variables at {var_path} do not fit the model described by '
                                          f'{cfg_path}'))
        try:
            variables = ckptr.restore(var_path, target)
        except Exception as e:
            raise ValueError(f'cannot restore the variables at {var_path} ({type(e).__name__}: '
                             f'{str(e)[:500]}); the checkpoint is corrupt or incomplete') from e
    variables = unfreeze(variables)
    if target_model is not None:
        params, lines = transfer.transfer_params(variables['params'], model, target_model)
        for line in lines:
            log.info('%s', line)
        model, variables = target_model, {**variables, 'params': params}
    return model, variables
