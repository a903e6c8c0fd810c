"""One comparison of an expected set of named arrays with a given one, for every loader's error.

Every loader (PyTorch state dicts, converted checkpoints, `init_from`, parameter transfer) reports
the same three kinds of mismatch (missing, unexpected, mis-shaped) in the same words, all at once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
from flax import traverse_util
from flax.core import unfreeze

Path = Tuple[str, ...]


def path_name(path) -> str:
    """'a/b/c' for a flattened-tree path ('a', 'b', 'c'); a string name is returned as it is."""
    return path if isinstance(path, str) else '/'.join(str(p) for p in path)


def flatten(tree: Mapping) -> Dict[Any, Any]:
    """A nested mapping as {path tuple: leaf}; a mapping whose keys are already names or paths (a
    state dict, a flattened tree) is returned as a plain dict."""
    tree = unfreeze(tree) if not isinstance(tree, dict) else tree
    if all(not isinstance(v, Mapping) for v in tree.values()):
        return dict(tree)
    return traverse_util.flatten_dict(unfreeze(tree))


def _describe(leaf, check_dtype: bool) -> str:
    shape = list(np.shape(leaf))
    if not check_dtype:
        return str(shape)
    return f'{np.dtype(leaf.dtype).name}{shape}'


@dataclasses.dataclass
class TreeDiff:
    """Names missing from, unexpected in, and mis-shaped in what was given, against what was expected.

    `misshaped` entries read 'name: <given> <shape>, <expected> <shape>' with the words the caller chose
    (e.g. 'checkpoint' / 'model', 'source' / 'model').
    """
    missing: List[str] = dataclasses.field(default_factory=list)
    unexpected: List[str] = dataclasses.field(default_factory=list)
    misshaped: List[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def lines(self, per_name: bool = False) -> List[str]:
        """One line per kind of mismatch that occurs, with its count: 'missing (2): a, b'; with
        `per_name`, one line per name instead: 'a: missing', 'b: unexpected', 'c: <given>, <expected>'
        (for a short list whose readers look for one name)."""
        if per_name:
            return ([f'{n}: missing' for n in self.missing] + [f'{n}: unexpected' for n in self.unexpected]
                    + list(self.misshaped))
        out = []
        for what, names, sep in (('missing', self.missing, ', '), ('unexpected', self.unexpected, ', '),
                                 ('mis-shaped', self.misshaped, '; ')):
            if names:
                out.append(f'{what} ({len(names)}): ' + sep.join(names))
        return out

    def message(self, title: str, hints: Optional[List[str]] = None, per_name: bool = False) -> str:
        """`title:` then each mismatch line and each hint, indented: the text of a ValueError."""
        return '\n  '.join([title.rstrip(':') + ':'] + self.lines(per_name) + list(hints or []))


def diff_trees(expected: Mapping, given: Mapping, *, check_dtype: bool = False,
               ignore: Optional[Callable[[str], bool]] = None,
               given_word: str = 'source', expected_word: str = 'model') -> TreeDiff:
    """Compare two trees (nested mappings or flat {name/path: array}) of arrays or ShapeDtypeStructs.

    Args:
      expected: what the target needs (e.g. `abstract_variables(model)['params']`).
      given: what was read (a checkpoint, a source's params).
      check_dtype: a leaf of another dtype is mis-shaped too (for stored checkpoints restored as is).
      ignore: names of `given` that may be left over without being 'unexpected'.
      given_word, expected_word: how the mis-shaped lines name the two sides.
    """
    want, have = flatten(expected), flatten(given)
    diff = TreeDiff()
    diff.missing = sorted(path_name(p) for p in want if p not in have)
    diff.unexpected = sorted(path_name(p) for p in have
                             if p not in want and not (ignore and ignore(path_name(p))))
    for p, spec in want.items():
        if p not in have:
            continue
        leaf = have[p]
        same = tuple(np.shape(leaf)) == tuple(np.shape(spec))
        if check_dtype:
            same = same and np.dtype(leaf.dtype) == np.dtype(spec.dtype)
        if not same:
            diff.misshaped.append(f'{path_name(p)}: {given_word} {_describe(leaf, check_dtype)}, '
                                  f'{expected_word} {_describe(spec, check_dtype)}')
    return diff
