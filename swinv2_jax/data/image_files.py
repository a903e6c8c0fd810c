"""A fast check of every image file of a `folder:DIR` dataset, before training starts.

TensorFlow names no file when a decode fails (`Unknown image file format`), and it fails at the
first batch (or at the first evaluation) that holds it. So when a folder dataset is opened, each
file's header is read: the magic bytes, the dimensions from the header, and the end marker
(JPEG's EOI, PNG's IEND chunk) that a truncated file lacks. That is a few hundred bytes per file,
no decode. The results are cached in `<DIR>/.image_check.json` (or under ~/.cache when DIR is
read-only), keyed on each file's path, size and mtime, so a second run re-reads only new or
changed files.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Dict, List, Optional, Tuple

EXTENSIONS = ('.jpg', '.jpeg', '.png')   # what tfds' ImageFolder reads
CACHE_NAME = '.image_check.json'
CACHE_VERSION = 1
_HEAD = 64 * 1024                         # JPEG headers (EXIF included) rarely exceed this


class BadImagesError(ValueError):
    """Image files of a folder dataset are unreadable; the message lists them."""


def _jpeg_size(head: bytes) -> Optional[Tuple[int, int]]:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack('>H', head[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # start of frame
            h, w = struct.unpack('>HH', head[i + 5:i + 9])
            return h, w
        i += 2 + length
    return None


def check_file(path: str) -> Optional[str]:
    """Why `path` is not a readable JPEG or PNG (None when its header and end look right)."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return 'empty file (0 bytes)'
        with open(path, 'rb') as f:
            head = f.read(_HEAD)
            f.seek(max(0, size - 16))
            tail = f.read()
    except OSError as e:
        return f'cannot be read ({e.strerror or e})'
    if head.startswith(b'\xff\xd8\xff'):
        dims = _jpeg_size(head)
        if dims is None and size <= _HEAD:
            return 'JPEG without a readable frame header (corrupt or truncated)'
        if dims is not None and min(dims) == 0:
            return f'JPEG of size {dims[1]}x{dims[0]}'
        if b'\xff\xd9' not in tail:
            return 'truncated JPEG (no end-of-image marker)'
        return None
    if head.startswith(b'\x89PNG\r\n\x1a\n'):
        if len(head) < 24 or head[12:16] != b'IHDR':
            return 'PNG without an IHDR header (corrupt or truncated)'
        w, h = struct.unpack('>II', head[16:24])
        if w == 0 or h == 0:
            return f'PNG of size {w}x{h}'
        if b'IEND' not in tail:
            return 'truncated PNG (no IEND chunk)'
        return None
    kind = ('GIF' if head[:4] == b'GIF8' else 'BMP' if head[:2] == b'BM' else 'WebP' if head[8:12] == b'WEBP'
            else None)
    if kind:
        return f'a {kind} image under an image extension: convert it to JPEG or PNG'
    return f'not a JPEG or PNG (starts with {head[:8]!r})'


def image_files(root: str) -> List[str]:
    """Every file of DIR/<split>/<class>/ that ImageFolder reads, relative to `root`, sorted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _cache_path(root: str) -> str:
    if os.access(root, os.W_OK):
        return os.path.join(root, CACHE_NAME)
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(base, 'swinv2_jax', 'image_check', f'{digest}.json')


def _load_cache(path: str) -> Dict[str, list]:
    try:
        with open(path) as f:
            data = json.load(f)
        return data['files'] if data.get('version') == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_cache(path: str, files: Dict[str, list]) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump({'version': CACHE_VERSION, 'files': files}, f)
        os.replace(tmp, path)      # atomic: concurrent processes write the same content
    except OSError:
        pass                       # a cache only: the check still ran


def bad_files(root: str) -> Dict[str, str]:
    """{relative path: reason} of every unreadable image under `root` (cached by path, size, mtime)."""
    cache_path = _cache_path(root)
    cache, fresh, bad = _load_cache(cache_path), {}, {}
    for rel in image_files(root):
        st = os.stat(os.path.join(root, rel))
        key = [st.st_size, st.st_mtime_ns]
        entry = cache.get(rel)
        reason = entry[2] if entry and entry[:2] == key else check_file(os.path.join(root, rel))
        fresh[rel] = key + [reason]
        if reason is not None:
            bad[rel] = reason
    if fresh != cache:
        _save_cache(cache_path, fresh)
    return bad


def describe(root: str, bad: Dict[str, str], limit: int = 50) -> str:
    lines = [f'{os.path.join(root, rel)}: {why}' for rel, why in sorted(bad.items())]
    more = f'\n  ... and {len(lines) - limit} more' if len(lines) > limit else ''
    return '\n  ' + '\n  '.join(lines[:limit]) + more
