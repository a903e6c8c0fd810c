"""The decision rules of the studies, as small pure functions (each study states its rule in words
in the report, before the numbers; these are the same rules in code).

A verdict is one of VERDICTS. A study with several parts combines them with `combine`: it holds if
every part holds, does not hold if every part does not hold, and is inconclusive otherwise.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Sequence

import numpy as np

HOLDS, FAILS, UNSURE = 'holds', 'does not hold', 'inconclusive'
VERDICTS = (HOLDS, FAILS, UNSURE)

COMBINE_RULE = ('The study holds if every part holds, does not hold if every part does not hold, and is '
                'inconclusive otherwise.')


def combine(parts: Iterable[str]) -> str:
    parts = list(parts)
    if parts and all(p == HOLDS for p in parts):
        return HOLDS
    if parts and all(p == FAILS for p in parts):
        return FAILS
    return UNSURE


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(values, np.float64)
    return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def amplitude_verdict(pre_discrepancy: float, post_discrepancy: float, factor: float = 2.0) -> str:
    """Fig. 2: holds if pre-norm's discrepancy (largest / smallest block amplitude) exceeds
    res-post-norm's by more than `factor`; does not hold if it does not exceed it at all;
    inconclusive in between."""
    if pre_discrepancy > factor * post_discrepancy:
        return HOLDS
    if pre_discrepancy <= post_discrepancy:
        return FAILS
    return UNSURE


def stability_verdict(pre_diverged: Sequence[bool], post_diverged: Sequence[bool]) -> str:
    """Fig. 3, at the same learning rates: holds if res-post-norm + cosine diverges at fewer rates
    than pre-norm + dot product and at none where pre-norm trains; does not hold if it diverges
    where pre-norm trains, or at as many rates when pre-norm diverges at all; inconclusive when
    neither diverges (the scale shows no instability to remove)."""
    n_pre, n_post = sum(map(bool, pre_diverged)), sum(map(bool, post_diverged))
    post_only = any(post and not pre for pre, post in zip(pre_diverged, post_diverged))
    if post_only or (n_pre > 0 and n_post >= n_pre):
        return FAILS
    if n_pre == 0:
        return UNSURE
    return HOLDS


def better(a: float, b: float, margin: float) -> str:
    """'better' if a > b + margin, 'worse' if a < b - margin, else 'tie'."""
    if a > b + margin:
        return 'better'
    if a < b - margin:
        return 'worse'
    return 'tie'


def ordering_verdict(log: float, linear: float, table: float, margin: float) -> str:
    """Table 1: holds if both CPB modes beat the table by more than `margin` and log-spaced is not
    worse than linear-spaced by more than it; does not hold if the table beats either CPB mode by
    more than `margin`, or linear-spaced beats log-spaced by more than it; inconclusive otherwise."""
    if better(table, log, margin) == 'better' or better(table, linear, margin) == 'better' \
            or better(linear, log, margin) == 'better':
        return FAILS
    if better(log, table, margin) == 'better' and better(linear, table, margin) == 'better':
        return HOLDS
    return UNSURE


def binomial_margin(p1: float, p2: float, n: int) -> float:
    """Twice the standard error of the difference of two accuracies, each over n examples."""
    return 2.0 * math.sqrt(max(p1 * (1 - p1), 1e-12) / n + max(p2 * (1 - p2), 1e-12) / n)


def ablation_verdict(rows: Sequence[Dict[str, float]]) -> str:
    """Table 6, rows in order (Swin V1, + res-post-norm, + cosine, SwinV2), each {'mean', 'std'}
    over seeds. A step improves (worsens) if its mean is higher (lower) than the previous row's by
    more than twice the larger seed spread of the two. Holds if the last row improves on the first
    and no step worsens; does not hold if the last row is worse than the first by that margin, or a
    step worsens; inconclusive otherwise."""
    def margin(a, b):
        return 2.0 * max(a['std'], b['std'])

    first, last = rows[0], rows[-1]
    steps = [better(b['mean'], a['mean'], margin(a, b)) for a, b in zip(rows, rows[1:])]
    overall = better(last['mean'], first['mean'], margin(first, last))
    if overall == 'worse' or 'worse' in steps:
        return FAILS
    if overall == 'better':
        return HOLDS
    return UNSURE
