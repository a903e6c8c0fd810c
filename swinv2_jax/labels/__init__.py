"""ImageNet class names shipped with the package, for checkpoints that carry none of their own.

    imagenet1k.txt.gz    1000 lines   ImageNet-1K (ILSVRC-2012) classes in the standard index order
    imagenet22k.txt.gz   21841 lines  ImageNet-22K (fall11, the order of the official 22K heads)

Each line is `synset<TAB>names` (WordNet lemmas, comma separated). Source: timm's
`timm/data/_info/` (imagenet_synsets.txt, imagenet22k_synsets.txt, imagenet_synset_to_lemma.txt),
Apache-2.0 (https://github.com/huggingface/pytorch-image-models); only joined and gzipped here.
"""
from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import List, Optional, Tuple

FILES = {1000: 'imagenet1k.txt.gz', 21841: 'imagenet22k.txt.gz'}


@functools.lru_cache(maxsize=None)
def _read(filename: str) -> Tuple[Tuple[str, str], ...]:
    data = gzip.decompress(resources.files(__name__).joinpath(filename).read_bytes()).decode('utf-8')
    return tuple(tuple(line.split('\t', 1)) for line in data.splitlines() if line)


def imagenet_names(num_classes: int) -> Optional[List[str]]:
    """The ImageNet class names of a head of `num_classes` (1000 or 21841), else None."""
    if num_classes not in FILES:
        return None
    return [names for _, names in _read(FILES[num_classes])]


def imagenet_synsets(num_classes: int) -> Optional[List[str]]:
    """The WordNet ids (`n01440764`) of those classes, else None."""
    if num_classes not in FILES:
        return None
    return [synset for synset, _ in _read(FILES[num_classes])]


__all__ = ['FILES', 'imagenet_names', 'imagenet_synsets']
