"""How a CPU process holds the memory of its compiled steps: mapped once, reused every call.

XLA:CPU allocates a program's temporaries as one block per call. With JAX's asynchronous CPU
dispatch the block is allocated on one of XLA's worker threads, where glibc serves a block that
large with a fresh `mmap` and unmaps it when the call ends: every step faults its temporaries in
again, 4 KiB at a time. `keep_step_memory()` runs single-device programs on the calling
thread (JAX's `jax_cpu_enable_async_dispatch=False`), so the block comes from glibc's main heap,
and tells glibc to grow that heap rather than `mmap` large blocks and never to trim it: from the
second call on, the step reuses pages that are already mapped. The heap keeps the largest step's
temporaries for the life of the process. Programs over several devices are dispatched to XLA's
threads either way and are unaffected. The figures are in benchmarks/README.md.

    from swinv2_jax import host_memory
    host_memory.keep_step_memory()    # once, before the first step; train.py does it on the CPU
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Dict, Optional

import jax

# glibc's mallopt parameters (malloc.h). M_TRIM_THRESHOLD takes a size_t: -1 is SIZE_MAX, never trim.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_SETTINGS = {'M_MMAP_MAX': (_M_MMAP_MAX, 0), 'M_TRIM_THRESHOLD': (_M_TRIM_THRESHOLD, -1)}
ASYNC_DISPATCH = 'jax_cpu_enable_async_dispatch'


def _glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc (mallopt's parameters are glibc's), else None."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')


def _backends_started() -> bool:
    """Whether JAX has made its clients (the CPU client reads the dispatch flag when it is made)."""
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):   # a JAX without the probe: assume not, as at start-up
        return False


def keep_step_memory() -> Optional[Dict[str, object]]:
    """Make compiled steps on the CPU reuse their temporaries' pages (see the module docstring).

    Call it before the first JAX computation: the CPU client reads the dispatch setting when it is
    made, and this function starts the backends to see which one is the default. Returns what was
    set, by name, or None where nothing applies: JAX's backends had already started, the C library
    is not glibc, or the default backend is not the CPU (the CPU client then also runs inline,
    which only its own rare programs see). Process-wide and not undone."""
    if _backends_started():
        return None
    libc = _glibc()
    if libc is None:
        return None
    try:
        jax.config.update(ASYNC_DISPATCH, False)
    except AttributeError:          # a JAX without the option: XLA's threads allocate, nothing to keep
        return None
    if jax.default_backend() != 'cpu':
        return None
    applied: Dict[str, object] = {ASYNC_DISPATCH: False}
    for name, (param, value) in _GLIBC_SETTINGS.items():
        if libc.mallopt(param, value) != 1:
            raise OSError(f'glibc refused mallopt({name}, {value})')
        applied[name] = 'SIZE_MAX' if value == -1 else value
    return applied
