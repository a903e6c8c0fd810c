"""The dataset names and splits of a training config, checked before anything is read.

Part of the start-up check of every config value (swinv2_jax/train/config_checks.py): an unknown
name gets one sentence naming the embedded and folder options (not tfds' list of every name it
knows), and a split that does not exist is named with the ones that do, where that is cheap to
know (digits, folders, prepared tfds datasets).
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence

import tensorflow_datasets as tfds

FOLDER_PREFIX = 'folder:'
DIGITS_SPLITS = ('train', 'test')
EVAL_ALIASES = ('val', 'validation', 'test')
_OPTIONS = ("use 'digits' (the embedded scikit-learn digits, no download), 'folder:/path/to/images' "
            "(DIR/<split>/<class>/<image>.jpg|png) or a TFDS dataset name such as 'imagenet2012'")


def _splits(name: str, data_dir: Optional[str]) -> Optional[Sequence[str]]:
    """The dataset's split names, or None when they are not cheap to know."""
    if name == 'digits':
        return DIGITS_SPLITS
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        return list(builder.info.splits.keys()) if builder.is_prepared() and builder.info.splits else None
    except Exception:  # noqa: BLE001  a builder that cannot say: tfds reports it when it reads
        return None


def _name_error(key: str, name) -> Optional[str]:
    if not isinstance(name, str) or not name:
        return f'{key}={name!r}: {_OPTIONS}'
    if name == 'digits':
        return None
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        if not os.path.isdir(root):
            return (f'{key}={name!r}: no directory {root!r}; folder datasets read '
                    f'DIR/<split>/<class>/<image>')
        return None
    try:
        tfds.builder_cls(re.split('[/:]', name)[0])
    except Exception:  # noqa: BLE001  DatasetNotFoundError and its relatives
        return f'{key}={name!r}: unknown dataset; {_OPTIONS}'
    return None


def _split_error(key: str, split: str, name: str, known: Sequence[str]) -> Optional[str]:
    folder = name.startswith(FOLDER_PREFIX)
    for part in str(split).split('+'):
        base = part.split('[')[0].strip()
        if base in known or (folder and base in EVAL_ALIASES and any(a in known for a in EVAL_ALIASES)):
            continue
        return f'{key}={split!r}: {name} has no split {base!r}; its splits are {", ".join(known) or "none"}'
    return None


def dataset_errors(config) -> List[str]:
    """Sentences for every unknown dataset name and missing split of `config` (empty: all fine)."""
    data_dir = config.get('data_dir', None)
    entries = [('dataset', config.get('dataset'), [('train_split', config.get('train_split', 'train'))]
                + ([('eval_split', config.eval_split)] if config.get('eval_split') else []))]
    for i, pair in enumerate(config.get('extra_evals', None) or ()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            entries.append((f'extra_evals[{i}]', None, []))
            continue
        entries.append((f'extra_evals[{i}]', pair[0], [(f'extra_evals[{i}] split', pair[1])]))
    errors = []
    for key, name, splits in entries:
        error = _name_error(key, name)
        if error:
            errors.append(error)
            continue
        known = _splits(name, data_dir)
        if known is None:
            continue
        errors += [e for e in (_split_error(k, s, name, known) for k, s in splits) if e]
    return errors
