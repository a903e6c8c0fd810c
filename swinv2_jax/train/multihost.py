"""Stopping every process together: one process' failure becomes every process' error.

A process that raises alone (a bad image, a full disk, a damaged checkpoint) leaves the others
waiting in the next collective until the coordination service's heartbeat times out. The checks
that can fail on one process (start-up checks, restore, each save) therefore end in
`first_failure`: a small allgather of every process' failure message (or none), after which every
process knows the same first failure and raises it. With one process these are plain pass-throughs.
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import jax
import numpy as np

MAX_MESSAGE_BYTES = 4096
T = TypeVar('T')


class StoppedByAnotherProcess(RuntimeError):
    """Another process of this run failed; this one stops with its message."""


def first_failure(message: Optional[str]) -> Optional[str]:
    """The failure message of the lowest-numbered process that has one (None: no process failed).

    A collective: every process must call it at the same point, with its message or None.
    """
    if jax.process_count() == 1:
        return message
    from jax.experimental import multihost_utils
    data = (message or '').encode()[:MAX_MESSAGE_BYTES]
    row = np.zeros(MAX_MESSAGE_BYTES + 3, np.uint8)
    row[0] = message is not None
    row[1], row[2] = len(data) // 256, len(data) % 256
    row[3:3 + len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(row)).reshape(jax.process_count(), -1)
    for process, r in enumerate(rows):
        if r[0]:
            n = int(r[1]) * 256 + int(r[2])
            text = bytes(r[3:3 + n]).decode(errors='replace')
            return text if process == jax.process_index() else f'process {process}: {text}'
    return None


def stop_together(fn: Callable[[], T], errors=(ValueError, OSError)) -> T:
    """`fn()`; when it raises one of `errors` on any process, every process raises: the failing
    one its own error, the others StoppedByAnotherProcess with that error's message."""
    try:
        out, failure, error = fn(), None, None
    except errors as e:
        out, failure, error = None, str(e), e
    agreed = first_failure(failure)
    if error is not None:
        raise error
    if agreed is not None:
        raise StoppedByAnotherProcess(agreed)
    return out


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
