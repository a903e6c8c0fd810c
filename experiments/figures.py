"""One PNG per study from its results.json entry (matplotlib, Agg backend; written atomically)."""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict

PLACEMENT = {'pre': ('pre-norm', 'tab:red'), 'res_post': ('res-post-norm', 'tab:blue')}


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    tmp = f'{path}.tmp-{os.getpid()}.png'
    try:
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, path)
    finally:
        _plt().close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def fig2_amplitudes(entry: Dict[str, Any], path: str) -> str:
    plt = _plt()
    models = entry['models']
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, (label, m) in zip(axes.flat, models.items()):
        for placement, (name, color) in PLACEMENT.items():
            amp = m[placement]
            x = range(1, len(amp['mean_abs']) + 1)
            ax.semilogy(x, amp['mean_abs'], color=color, marker='o', markersize=3,
                        label=f'{name} mean|x| (D={amp["discrepancy"]:.3g})')
            ax.semilogy(x, amp['max_abs'], color=color, linestyle='--', alpha=0.6, label=f'{name} max|x|')
        ax.set_title(f'{label}: {entry["parts"][label]}', fontsize=9)
        ax.set_xlabel('block')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=6)
    axes.flat[0].set_ylabel('main-branch amplitude after the block')
    fig.suptitle('Fig. 2: activation amplitude across depth (a: at init, norms at 1; b: trained digits)',
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def stability(entry: Dict[str, Any], path: str) -> str:
    plt = _plt()
    rates = list(next(iter(entry['runs'].values())))
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.4), squeeze=False)
    colors = dict(zip(entry['runs'], ('tab:red', 'tab:blue')))
    for ax, rate in zip(axes.flat, rates):
        for label, runs in entry['runs'].items():
            r = runs[rate]
            steps = [p['step'] for p in r['losses']]
            losses = [p['loss'] if math.isfinite(p['loss']) else float('nan') for p in r['losses']]
            tag = f' (diverged: {r["diverged"]})' if r['diverged'] else ''
            ax.plot(steps, losses, color=colors[label], label=label + tag)
        ax.set_title(f'{rate} (lr {runs[rate]["lr_per_512"]:.3g} per 512)', fontsize=9)
        ax.set_xlabel('step')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes.flat[0].set_ylabel('training loss')
    fig.suptitle(f'Fig. 3: stability of a deeper digits model ({entry["verdict"]})', fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def table1_window_transfer(entry: Dict[str, Any], path: str) -> str:
    import numpy as np
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for label, per_size in entry['direct'].items():
        sizes = list(per_size)
        values = [[v if v is not None else 0.0 for v in per_size[s].values()] for s in sizes]
        mean = [100 * np.mean(v) for v in values]
        std = [100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        axes[0, 0].errorbar(sizes, mean, yerr=std, marker='o', capsize=3, label=label)
        ft = entry['finetuned'][label]
        axes[0, 1].plot(list(ft), [100 * (v or 0.0) for v in ft.values()], marker='o', label=label)
    for ax, title in zip(axes.flat, ('without fine-tuning (mean, seed std)', 'after a short fine-tune (seed 0)')):
        ax.set_title(f'{title}: {entry["parts"]["without fine-tuning" if ax is axes[0, 0] else "after fine-tuning"]}',
                     fontsize=9)
        ax.set_xlabel('target size / window')
        ax.set_ylabel('held-out top-1 (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle('Table 1: trained at 32 px / window 4, moved to larger windows', fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def table6_ablation(entry: Dict[str, Any], path: str) -> str:
    plt = _plt()
    rows = entry['rows']
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (label, row) in enumerate(rows.items()):
        ax.bar(i, 100 * row['mean'], yerr=100 * row['std'], capsize=4, color='tab:gray', alpha=0.6)
        ax.scatter([i] * len(row['top1']), [100 * v for v in row['top1'].values()], color='k', s=12, zorder=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(list(rows), fontsize=8)
    low = min(100 * v for row in rows.values() for v in row['top1'].values())
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_ylabel('held-out top-1 (%)')
    ax.set_title(f'Table 6: ablation on the digits, mean and seed std ({entry["verdict"]})', fontsize=10)
    ax.grid(alpha=0.3, axis='y')
    fig.tight_layout()
    return _save(fig, path)


FIGURES: Dict[str, Callable[[Dict[str, Any], str], str]] = {
    'fig2_amplitudes': fig2_amplitudes, 'stability': stability,
    'table1_window_transfer': table1_window_transfer, 'table6_ablation': table6_ablation,
}
