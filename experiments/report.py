"""results.json and report.md from the studies' entries (both written atomically).

report.md gives, per study: the claim, the rule that decides it (fixed in experiments/studies.py
before the run), what was run, a table of the numbers, the figure and the verdict; at the top the
command, versions, machine and wall time, and one line per study.
"""
from __future__ import annotations

import json
import math
import os
import platform
from typing import Any, Callable, Dict, List

SHORT = {'fig2_amplitudes': 'Fig. 2: res-post-norm keeps activation amplitudes milder than pre-norm',
         'stability': 'Fig. 3: res-post-norm + cosine attention trains where pre-norm + dot product diverges',
         'table1_window_transfer': 'Table 1: log-CPB > linear-CPB > bias table when moved to larger windows',
         'table6_ablation': 'Table 6: res-post-norm and cosine attention each improve Swin V1; SwinV2 best'}


def plain(value):
    """JSON-safe: non-finite floats -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: str, text: str) -> None:
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_results(out_dir: str, results: Dict[str, Any]) -> str:
    path = os.path.join(out_dir, 'results.json')
    write_atomic(path, json.dumps(plain(results), indent=1, sort_keys=False) + '\n')
    return path


def versions() -> Dict[str, str]:
    import flax
    import jax
    import matplotlib
    import numpy
    import optax
    out = {'python': platform.python_version(), 'jax': jax.__version__, 'flax': flax.__version__,
           'optax': optax.__version__, 'numpy': numpy.__version__, 'matplotlib': matplotlib.__version__}
    try:
        import tensorflow as tf
        out['tensorflow'] = tf.__version__
    except ImportError:
        pass
    return out


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def _pct(v) -> str:
    return '-' if v is None else f'{100 * v:.1f}'


def _pm(stats: Dict[str, float]) -> str:
    return f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f}'


def _fig2_table(e) -> List[str]:
    lines = ['| model | parameters | pre-norm: mean\\|x\\| first → last block | discrepancy | res-post-norm: '
             'mean\\|x\\| first → last | discrepancy | pre-norm max\\|x\\| (largest) | verdict |',
             '|---|---|---|---|---|---|---|---|']
    for label, m in e['models'].items():
        pre, post = m['pre'], m['res_post']
        params = f'{m["num_params"] / 1e6:.0f}M' if 'num_params' in m else 'trained'
        lines.append(f'| {label} | {params} | {pre["mean_abs"][0]:.3g} → {pre["mean_abs"][-1]:.3g} | '
                     f'{pre["discrepancy"]:.3g} | {post["mean_abs"][0]:.3g} → {post["mean_abs"][-1]:.3g} | '
                     f'{post["discrepancy"]:.3g} | {max(pre["max_abs"]):.3g} | {e["parts"][label]} |')
    return lines


def _stability_table(e) -> List[str]:
    lines = ['| setting | lr (per 512) | first loss | last loss | diverged | held-out top-1 (%) |', '|---|---|---|---|---|---|']
    for label, runs in e['runs'].items():
        for rate, r in runs.items():
            first = r['losses'][0]['loss'] if r['losses'] else float('nan')
            last = r['losses'][-1]['loss'] if r['losses'] else float('nan')
            lines.append(f'| {label} | {rate}: {r["lr_per_512"]:.3g} | {first:.3f} | {last:.3f} | '
                         f'{r["diverged"] or "no"} | {_pct(r["top1"])} |')
    return lines


def _table1_table(e) -> List[str]:
    sizes = list(next(iter(e['direct'].values())))
    head = ['bias', 'trained 32/w4'] + [f'{s} direct' for s in sizes] + [f'{s} fine-tuned' for s in sizes]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    from experiments.verdicts import mean_std
    for label in e['direct']:
        trained = mean_std([v or 0.0 for v in e['trained_top1'][label].values()])
        cells = [label, _pm(trained)]
        cells += [_pm(mean_std([v or 0.0 for v in e['direct'][label][s].values()])) for s in sizes]
        cells += [_pct(e['finetuned'][label].get(s)) for s in sizes]
        lines.append('| ' + ' | '.join(cells) + ' |')
    s = e['summary']
    lines += ['', 'Averaged over the target sizes, without fine-tuning: ' + ', '.join(
        f'{k} {_pm(v)}' for k, v in s['direct_mean_over_sizes'].items()) + f' (margin {100 * s["direct_margin"]:.1f});'
        ' after the fine-tune: ' + ', '.join(f'{k} {_pct(v)}' for k, v in s['finetuned_mean_over_sizes'].items())
        + f' (margin {100 * s["finetuned_margin"]:.1f}). Top-1 in %, mean ± seed std.']
    return lines


def _table6_table(e) -> List[str]:
    seeds = list(next(iter(e['rows'].values()))['top1'])
    lines = ['| row | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean ± std |',
             '|---|' + '---|' * (len(seeds) + 1)]
    for label, row in e['rows'].items():
        lines.append(f'| {label} | ' + ' | '.join(_pct(row['top1'][s]) for s in seeds) + f' | {_pm(row)} |')
    return lines


TABLES: Dict[str, Callable[[Dict[str, Any]], List[str]]] = {
    'fig2_amplitudes': _fig2_table, 'stability': _stability_table,
    'table1_window_transfer': _table1_table, 'table6_ablation': _table6_table}


def write_report(out_dir: str, results: Dict[str, Any], *, command: str, scale: str, wall_seconds: float,
                 notes: Dict[str, str]) -> str:
    lines = ['# The paper\'s claims in this implementation', '',
             f'Command: `{command}` (scale `{scale}`). Wall time {wall_seconds / 60:.1f} min on '
             f'{os.cpu_count()} cores of {cpu_model()}. Versions: '
             + ', '.join(f'{k} {v}' for k, v in versions().items()) + '.', '',
             'Each study states the paper\'s claim and the rule that decides it; the rules were fixed in '
             '`experiments/studies.py` before any of these numbers were measured. Held-out top-1 is on the '
             '300 held-out digits; the digits runs train on 1,497 images with a short budget (said per study) '
             'so that top-1 does not saturate near 99%.', '',
             '| study | claim | verdict at this scale |', '|---|---|---|']
    lines += [f'| [{name}](#{name.replace("_", "-")}) | {SHORT[name]} | **{e["verdict"]}** |'
              for name, e in results.items()]
    for name, e in results.items():
        lines += ['', f'## {name}', '', f'**Claim.** {e["claim"]}', '', f'**Rule.** {e["rule"]}', '',
                  f'**Setup.** {e["setup"]} ({e["seconds"] / 60:.1f} min)', '']
        lines += TABLES[name](e)
        lines += ['', f'![{name}]({name}.png)', '',
                  f'**Verdict: {e["verdict"]}** (' + ', '.join(f'{k}: {v}' for k, v in e['parts'].items()) + ').']
        if notes.get(name):
            lines += ['', notes[name]]
    path = os.path.join(out_dir, 'report.md')
    write_atomic(path, '\n'.join(lines) + '\n')
    return path
