r"""Training curves from train.py workdirs: loss, learning rate and every evaluation metric against
steps, read from each run's metrics.jsonl, several runs overlaid and labelled.

  python -m swinv2_jax.plot /tmp/run1 /tmp/run2 [--out curves.png]

train.py writes WORKDIR/curves.png at the end of a run. matplotlib (Agg backend, no display) is
a training requirement, not one of the model package.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from swinv2_jax.train.metrics import METRICS_FILE  # the file the trainer writes

TRAIN_KEYS = ('loss', 'lr')        # the training records' curves, drawn first
# evaluation records carry `eval_seconds` (the trainer's timing); these keys are bookkeeping
SKIP_SUFFIXES = ('_seconds', '_examples')

Series = Dict[str, Tuple[List[int], List[float]]]


def read_records(workdir: str) -> List[dict]:
    """metrics.jsonl's records (a line cut short by a kill is skipped)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} does not exist: {workdir} is not a train.py workdir (or has not '
                                f'logged yet)')
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and 'step' in record:
                records.append(record)
    return records


def curves(records: Sequence[dict]) -> Series:
    """name -> (steps, values): `loss` and `lr` of the training records, and each numeric metric of
    the evaluation records (those with `eval_seconds`)."""
    out: Series = {}

    def add(name, step, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps, values = out.setdefault(name, ([], []))
            steps.append(int(step))
            values.append(float(value))

    for r in records:
        if 'eval_seconds' in r:
            for k, v in r.items():
                if k != 'step' and not k.endswith(SKIP_SUFFIXES):
                    add(k, r['step'], v)
        elif 'loss' in r and 'lr' in r:
            for k in TRAIN_KEYS:
                add(k, r['step'], r[k])
    return out


def run_labels(workdirs: Sequence[str]) -> List[str]:
    """Short, distinct names: the last path components that tell the runs apart."""
    parts = [os.path.abspath(w).rstrip(os.sep).split(os.sep) for w in workdirs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = [os.sep.join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.abspath(w) for w in workdirs]


def plot_runs(workdirs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None) -> str:
    """Draw the runs' curves into one PNG at `out` (written atomically); returns its path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    runs = [curves(read_records(w)) for w in workdirs]
    labels = list(labels or run_labels(workdirs))
    names = [k for k in TRAIN_KEYS if any(k in r for r in runs)]
    names += sorted({k for r in runs for k in r} - set(names))
    if not names:
        raise ValueError(f'no training or evaluation metrics in {", ".join(workdirs)} yet')
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, label in zip(runs, labels):
            if name in run:
                steps, values = run[name]
                ax.plot(steps, values, marker='o' if len(steps) <= 20 else None, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel('step')
        ax.grid(alpha=0.3)
        if name == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize='small')
    fig.tight_layout()
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f'{out}.tmp-{os.getpid()}.png'
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='python -m swinv2_jax.plot', description=__doc__.split('\n\n')[0])
    p.add_argument('workdirs', nargs='+', help='train.py workdirs (each with metrics.jsonl)')
    p.add_argument('--out', default='curves.png', help='the PNG to write (default curves.png)')
    args = p.parse_args(argv)
    try:
        print(plot_runs(args.workdirs, args.out))
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
