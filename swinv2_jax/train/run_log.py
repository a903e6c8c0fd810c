"""Where a run's messages go: the console gets one line per failure, the workdir's log everything.

`<workdir>/train.log` receives every log record of every library at INFO and above, with the full
tracebacks: those of a failure, of Orbax's background threads ("Event loop is closed" after a
failed restore or save), of TensorFlow. The console keeps the run's own lines and the libraries'
warnings without their tracebacks; `--verbosity=1` (or higher) puts the tracebacks back on it.
"""
from __future__ import annotations

import logging as pylogging
import os
import sys
import threading
import traceback
from typing import Optional

from absl import logging

LOG_FILE = 'train.log'
FILE_ONLY = {'file_only': True}   # `extra=` of a record for the log file alone


class _NoTracebacks(pylogging.Filter):
    """On the console: a record's traceback stays in the file; 'Event loop is closed' noise (Orbax's
    background threads after a failed restore or save) goes to the file only."""

    def filter(self, record):
        if getattr(record, 'file_only', False):
            return False
        if record.exc_info:
            record.exc_info, record.exc_text = None, None
        return 'Event loop is closed' not in record.getMessage()


def start(workdir: str, process_index: int = 0) -> Optional[str]:
    """Log to `<workdir>/train.log` (process p > 0: train.p.log; appending) and keep library
    tracebacks off the console unless the verbosity is above INFO. Returns the log's path (None
    when it cannot be opened)."""
    path = os.path.join(workdir, LOG_FILE if process_index == 0 else f'train.{process_index}.log')
    try:
        os.makedirs(workdir, exist_ok=True)
        handler = pylogging.FileHandler(path)
    except OSError:
        return None
    handler.setLevel(pylogging.INFO)
    handler.setFormatter(pylogging.Formatter('%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] '
                                             '%(message)s'))
    pylogging.getLogger().addHandler(handler)
    if logging.get_verbosity() <= logging.INFO:
        logging.get_absl_handler().addFilter(_NoTracebacks())

        def thread_failed(args):   # a background thread's exception: the file gets the traceback
            if args.exc_type is SystemExit:
                return
            text = ''.join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            pylogging.getLogger('swinv2_jax').error('thread %s failed:\n%s', getattr(args.thread, 'name', '?'),
                                                    text, extra=FILE_ONLY)
        threading.excepthook = thread_failed
        sys.unraisablehook = lambda u: pylogging.getLogger('swinv2_jax').error(
            'unraisable exception: %s', ''.join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback)),
            extra=FILE_ONLY)
    return path


def report(error: BaseException, log_path: Optional[str]) -> str:
    """The failure's one console message; its traceback goes to the log file."""
    pylogging.getLogger('swinv2_jax').error(
        'run failed:\n%s', ''.join(traceback.format_exception(type(error), error, error.__traceback__)),
        extra=FILE_ONLY)
    where = f' (traceback in {log_path})' if log_path else ''
    return f'error: {error}{where}'
