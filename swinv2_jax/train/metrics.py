"""Where the numbers go: DIR/metrics.jsonl, TensorBoard event files in DIR, a tqdm bar, the log.

On a terminal, process 0 draws one progress bar (loss and lr on it) and prints evaluations above
it; without a terminal (a log file, a pipe) the periodic training lines go to the absl log instead.

- metrics.jsonl: one JSON object per line, each with `step`; evaluations carry `eval_top1` and
  `eval_top5` as fractions. A resumed run first drops the lines past the step it resumes from
  (they describe steps that are about to be redone), so the file reads as one run.
- TensorBoard event files in DIR (see `_TensorBoard`).
- Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from typing import Any, Dict

import jax
import numpy as np
from absl import logging

METRICS_FILE = 'metrics.jsonl'


def _plain(v):
    if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, '__array__'):
        v = np.asarray(v)
        return v.item() if v.ndim == 0 else v.tolist()
    return v


def read_metrics(workdir: str) -> list:
    """The records of DIR/metrics.jsonl, in order."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_after(workdir: str, step: int) -> None:
    """Drop metrics.jsonl records with `step` > step (atomic rewrite)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    keep = []
    for line in lines:
        try:
            if json.loads(line).get('step', 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            pass  # a line cut by a kill: dropped
    if len(keep) != len(lines):
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.writelines(keep)
        os.replace(tmp, path)


class _TensorBoard:
    """TensorBoard event files written with TensorFlow's own protos and TFRecord writer.

    TensorFlow is already loaded by the input pipeline; `tf.summary` would need the separate
    `tensorboard` package (not a dependency of tensorflow-cpu), and tensorboardX imports torch
    when it is installed (seconds at start-up). tensorboardX is the fallback without TensorFlow.
    """

    def __init__(self, logdir: str):
        self._tbx = None
        try:
            import tensorflow as tf
            from tensorflow.core.util import event_pb2
        except ImportError:
            from tensorboardX import SummaryWriter
            self._tbx = SummaryWriter(logdir=logdir)
            return
        self._event_pb2 = event_pb2
        name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}'
        self.path = os.path.join(logdir, name)
        self._writer = tf.io.TFRecordWriter(self.path)
        self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

    def _write(self, event):
        self._writer.write(event.SerializeToString())

    def scalars(self, step: int, scalars: Dict[str, float]):
        if self._tbx is not None:
            for k, v in scalars.items():
                self._tbx.add_scalar(k, v, step)
            return
        from tensorflow.core.framework import summary_pb2
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                          summary=summary_pb2.Summary(value=values)))

    def flush(self):
        (self._tbx or self._writer).flush()

    def close(self):
        (self._tbx or self._writer).close()


class MetricWriter:
    """metrics.jsonl + TensorBoard + progress bar. Writes nothing except on process 0."""

    def __init__(self, workdir: str, total_steps: int, initial_step: int = 0,
                 tensorboard: bool = True, progress: bool = True):
        self.enabled = jax.process_index() == 0
        self.workdir = workdir
        self._tb = None
        self._bar = None
        self._file = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        truncate_after(workdir, initial_step)
        self._file = open(os.path.join(workdir, METRICS_FILE), 'a')
        if tensorboard:
            try:
                self._tb = _TensorBoard(workdir)
            except Exception as e:  # TensorBoard is a convenience: never fail a run for it
                logging.warning('no TensorBoard event files (%s: %s)', type(e).__name__, e)
        if progress and sys.stderr.isatty():   # a bar in a log file is one endless line
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=initial_step, unit='step', dynamic_ncols=True,
                             smoothing=0.1, mininterval=1.0, file=sys.stderr)

    def write(self, step: int, metrics: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + '\n')
        self._file.flush()
        if self._tb is not None:
            scalars = {k: float(v) for k, v in record.items()
                       if k != 'step' and isinstance(v, (int, float)) and math.isfinite(v)}
            self._tb.scalars(int(step), scalars)
            self._tb.flush()

    def log(self, line: str, shown_by_bar: bool = False) -> None:
        """A line of the run's story: printed above the progress bar when one is drawn (left out when
        the bar already shows it: the periodic training lines), else to the absl log."""
        if self._bar is None:
            logging.info('%s', line)
        elif not shown_by_bar:
            self._bar.write(line, file=sys.stderr)

    def progress(self, step: int, **postfix) -> None:
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        if postfix:
            self._bar.set_postfix({k: (f'{v:.4g}' if isinstance(v, float) else v)
                                   for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


class Meter:
    """Means of the per-step training scalars between two log lines, and throughput."""

    def __init__(self):
        self.reset()

    def reset(self):
        self._sums: Dict[str, float] = {}
        self._last: Dict[str, float] = {}
        self._n = 0
        self._t0 = time.perf_counter()
        self._steps = 0
        self._paused = 0.0

    def add(self, scalars: Dict[str, float]):
        for k, v in scalars.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._last = dict(scalars)
        self._n += 1
        self._steps += 1

    def pause(self, seconds: float):
        """Time spent outside training (evaluation, checkpoints), left out of the throughput."""
        self._paused += seconds

    def summary(self, batch_size: int) -> Dict[str, float]:
        out = {k: v / max(self._n, 1) for k, v in self._sums.items()}
        if 'lr' in self._last:
            out['lr'] = float(self._last['lr'])   # the current one, not the interval's mean
        elapsed = max(time.perf_counter() - self._t0 - self._paused, 1e-9)
        out['steps_per_sec'] = self._steps / elapsed
        out['images_per_sec'] = self._steps * batch_size / elapsed
        return out

    @property
    def count(self) -> int:
        return self._n


QUIET_LIBRARIES = ('orbax', 'tensorflow_datasets')


def quiet_library_logs() -> None:
    """Keep the INFO lines of Orbax (a dozen per checkpoint) and tensorflow_datasets (three per
    evaluation) out of the absl log; their warnings still show."""
    import logging as pylogging

    class _Filter(pylogging.Filter):
        def filter(self, record):
            return record.levelno >= pylogging.WARNING or not any(
                name in record.pathname for name in QUIET_LIBRARIES)

    handler = logging.get_absl_handler()
    if not any(isinstance(f, _Filter) for f in handler.filters):
        handler.addFilter(_Filter())


__all__ = ['MetricWriter', 'quiet_library_logs', 'Meter', 'read_metrics', 'truncate_after', 'METRICS_FILE']
