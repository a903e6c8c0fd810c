"""Every config value checked once, at start-up, against its meaning (config_lib documents each key).

`config_errors` returns one sentence per bad value, each naming the key, the value and what would
work, so that a run with several mistakes reports them all at once (ConfigError) before anything
is built, instead of training to chance accuracy (a negative lr) or dying in a ZeroDivisionError
(batch_size=0). The dataset's names and splits are checked by the input pipeline
(`swinv2_jax.data.dataset_errors`), which knows them; TensorFlow stays out of this module.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, List, Optional, Sequence

INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'area', 'lanczos3', 'lanczos5', 'gaussian', 'mitchellcubic')


class ConfigError(ValueError):
    """One or more config values cannot work; the message lists each with a fix."""


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class _Errors(list):
    def need(self, ok: bool, key: str, value: Any, fix: str) -> bool:
        if not ok:
            self.append(f'{key}={value!r}: {fix}')
        return ok

    def number(self, config, key: str, low: float, *, low_ok: bool = True, high: Optional[float] = None,
               high_ok: bool = True, integer: bool = False, fix: str = '') -> None:
        value = _get(config, key)
        if value is _MISSING:
            return
        kind = 'an integer' if integer else 'a number'
        if not self.need(_int(value) if integer else _num(value), key, value, f'must be {kind}{fix}'):
            return
        ok = value >= low if low_ok else value > low
        if high is not None:
            ok = ok and (value <= high if high_ok else value < high)
        lo = f'{">=" if low_ok else ">"} {low:g}'
        hi = '' if high is None else f' and {"<=" if high_ok else "<"} {high:g}'
        self.need(ok, key, value, f'must be {lo}{hi}{fix}')


_MISSING = object()


def _get(config, key: str):
    node = config
    for part in key.split('.'):
        if not hasattr(node, 'get') or part not in node:
            return _MISSING
        node = node[part]
    return node


def _pair(errors: _Errors, config, key: str, low: float, high: Optional[float], fix: str) -> None:
    v = _get(config, key)
    if v is _MISSING:
        return
    ok = (isinstance(v, (tuple, list)) and len(v) == 2 and all(_num(x) for x in v) and low < v[0] <= v[1]
          and (high is None or v[1] <= high))
    errors.need(ok, key, tuple(v) if isinstance(v, list) else v, fix)


def config_errors(config, workdir: Optional[str] = None, *, num_devices: int = 1, num_processes: int = 1,
                  objectives: Sequence[str] = (), sharding_modes: Sequence[str] = (),
                  schedules: Sequence[str] = ()) -> List[str]:
    """Every problem of `config` (and of `workdir`), as 'key=value: what would work' sentences."""
    e = _Errors()
    _sizes(e, config, num_devices, num_processes)
    _schedule(e, config)
    _optim(e, config, schedules)
    _aug(e, config)
    if objectives:
        e.need(config.get('objective', 'classification') in objectives, 'objective', config.get('objective'),
               f'unknown; use one of {", ".join(map(repr, objectives))}')
    if sharding_modes:
        e.need(config.get('sharding', 'zero1') in sharding_modes, 'sharding', config.get('sharding'),
               f'unknown; use one of {", ".join(map(repr, sharding_modes))}')
    e.number(config, 'seed', 0, integer=True)
    init_from = config.get('init_from', '')
    if init_from:
        e.need(os.path.exists(init_from), 'init_from', init_from,
               'no such file or directory; pass a converted checkpoint directory, a PyTorch or '
               '.safetensors file, or a training workdir')
    if workdir is not None:
        e.need(not os.path.exists(workdir) or os.path.isdir(workdir), '--workdir', workdir,
               'is a file, not a directory; pass a directory (it is created if missing)')
    return list(e)


def _sizes(e: _Errors, config, num_devices: int, num_processes: int) -> None:
    for key in ('batch_size', 'eval_batch_size'):
        value = _get(config, key)
        if value is _MISSING:
            continue
        if e.need(_int(value) and value > 0, key, value,
                  f'must be a positive integer (global, split over {num_devices} devices)'):
            split = math.lcm(num_devices, num_processes)
            e.need(value % split == 0, key, value,
                   f'must be divisible by the {num_devices} devices and {num_processes} processes; '
                   f'e.g. {max(split, value - value % split)} or {value - value % split + split}')
    e.number(config, 'shuffle_window', 1, integer=True)
    e.number(config, 'keep_checkpoints', 1, integer=True)
    e.number(config, 'log_every_steps', 1, integer=True)
    e.number(config, 'eval_every_steps', 0, integer=True, fix=' (0: only at the end)')
    e.number(config, 'checkpoint_every_steps', 0, integer=True, fix=' (0: only at the end)')
    e.number(config, 'optim.grad_accum_steps', 1, integer=True, fix=' (1: no accumulation)')


def _schedule(e: _Errors, config) -> None:
    steps, epochs = _get(config, 'num_train_steps'), _get(config, 'num_epochs')
    if steps is _MISSING:
        return
    if not e.need(_int(steps), 'num_train_steps', steps, 'must be an integer (> 0 overrides num_epochs)'):
        return
    if steps <= 0:
        e.number(config, 'num_epochs', 0, low_ok=False, fix=' (or set num_train_steps > 0)')
    k = _get(config, 'optim.grad_accum_steps')
    if steps > 0 and _int(k) and k >= 1:
        e.need(steps >= k, 'num_train_steps', steps,
               f'must be at least optim.grad_accum_steps={k} (one optimizer update)')
    warmup_steps, warmup_epochs = _get(config, 'optim.warmup_steps'), _get(config, 'optim.warmup_epochs')
    if warmup_epochs is not _MISSING:
        e.number(config, 'optim.warmup_epochs', 0)
    if config.get('eval_only', False):
        return
    # A warm-up as long as a (test-sized) run is allowed; a longer one never reaches the peak lr.
    if _int(warmup_steps) and warmup_steps >= 0:
        if steps > 0 and _int(k) and k >= 1:
            e.need(warmup_steps <= max(steps // k, 1), 'optim.warmup_steps', warmup_steps,
                   f'the warm-up is longer than the {max(steps // k, 1)} optimizer updates of the run '
                   f'(num_train_steps={steps} / optim.grad_accum_steps={k}); lower it')
    elif warmup_steps is not _MISSING:
        e.need(_int(warmup_steps), 'optim.warmup_steps', warmup_steps, 'must be an integer (-1: use warmup_epochs)')
        if _num(warmup_epochs) and warmup_epochs >= 0 and steps <= 0 and _num(epochs) and epochs > 0:
            e.need(warmup_epochs <= epochs, 'optim.warmup_epochs', warmup_epochs,
                   f'the warm-up is longer than num_epochs={epochs}; lower it')


def _optim(e: _Errors, config, schedules: Sequence[str]) -> None:
    for key in ('optim.lr', 'optim.warmup_lr', 'optim.min_lr'):
        e.number(config, key, 0, fix=' (learning rates per 512 images; e.g. 5e-4)')
    e.number(config, 'optim.weight_decay', 0)
    e.number(config, 'optim.eps', 0, low_ok=False, fix=' (e.g. 1e-8)')
    e.number(config, 'optim.clip_grad', 0, fix=' (0: off)')
    e.number(config, 'optim.layer_decay', 0, low_ok=False, high=1, fix=' (1.0: off)')
    e.number(config, 'optim.ema_decay', 0, high=1, high_ok=False, fix=' (0: off; e.g. 0.9998)')
    e.number(config, 'optim.decay_rate', 0, low_ok=False)
    betas = _get(config, 'optim.betas')
    if betas is not _MISSING:
        e.need(isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_num(b) and 0 <= b < 1 for b in betas),
               'optim.betas', betas, 'must be two numbers in [0, 1), e.g. (0.9, 0.999)')
    schedule = _get(config, 'optim.schedule')
    if schedule is not _MISSING and schedules:
        e.need(schedule in schedules, 'optim.schedule', schedule,
               f'unknown; use one of {", ".join(map(repr, schedules))}')


def _aug(e: _Errors, config) -> None:
    _pair(e, config, 'aug.crop_scale', 0, 1, 'must be (low, high) with 0 < low <= high <= 1, e.g. (0.08, 1.0)')
    _pair(e, config, 'aug.crop_ratio', 0, None, 'must be (low, high) with 0 < low <= high, e.g. (0.75, 1.333)')
    for key in ('aug.random_erasing', 'aug.mix_prob', 'aug.switch_prob'):
        if not hasattr(_get(config, key), 'get'):
            e.number(config, key, 0, high=1, fix=' (a probability)')
    for key in ('aug.mixup', 'aug.cutmix', 'aug.color_jitter'):
        e.number(config, key, 0, fix=' (0: off)')
    e.number(config, 'aug.label_smoothing', 0, high=1, high_ok=False)
    e.number(config, 'aug.crop_pct', 0, low_ok=False, high=1)
    method = _get(config, 'aug.interpolation')
    if method is not _MISSING:
        e.need(method in INTERPOLATIONS, 'aug.interpolation', method, f'use one of {", ".join(INTERPOLATIONS)}')
    std = _get(config, 'aug.std')
    if std is not _MISSING:
        e.need(isinstance(std, (tuple, list)) and all(_num(s) and s > 0 for s in std), 'aug.std', std,
               'must be positive numbers, one per channel')


def check(config, workdir: Optional[str] = None, *, extra: Callable[[Any], List[str]] = None, **kwargs) -> None:
    """Raise ConfigError listing every problem of `config` (and `extra(config)`'s, e.g. the dataset's)."""
    errors = config_errors(config, workdir, **kwargs)
    if extra is not None:
        errors += extra(config)
    if errors:
        raise ConfigError(f'{len(errors)} invalid config value{"s" if len(errors) > 1 else ""} (set them '
                          f'with --config.KEY=VALUE; every key is documented in '
                          f'swinv2_jax/train/config_lib.py):\n  ' + '\n  '.join(errors))
