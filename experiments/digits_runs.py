"""Training runs on the embedded digits for the studies, through the project's trainer.

Every run is `swinv2_jax.train.trainer.train_and_evaluate` on a `configs/digits.py` config with a
few keys changed (the budget, the seed, the model's switches); what a study reads afterwards comes
from the run's own outputs: `metrics.jsonl` (loss curve, held-out top-1) and the returned state.
A run whose loss becomes NaN stops with the trainer's `NonFiniteLossError`, which is recorded as a
divergence, not raised. Runs with the same config are trained once per invocation (the studies
share some: Table 1's log-spaced CPB is Table 6's full V2).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from typing import Any, Dict, List, Optional

import ml_collections

from configs import digits as digits_recipe
from swinv2_jax.train import metrics, objectives, trainer


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long a digits run trains; the same for every variant of a study."""
    epochs: float            # of the 1,497 training images (23 steps of 64 each)
    log_every_steps: int     # the loss curve's resolution
    batch_size: int = 64


@dataclasses.dataclass
class Run:
    label: str
    workdir: str
    losses: List[Dict[str, float]]     # [{'step', 'loss'}] as logged
    top1: Optional[float]              # held-out top-1 at the end (None when it diverged)
    diverged: Optional[str]            # None, 'nan' or 'loss above its start'
    seconds: float
    state: Any = None                  # the final TrainState (None when it diverged)
    model: Any = None


def digits_config(budget: Budget, *, seed: int = 0, lr_scale: float = 1.0,
                  **model_overrides) -> ml_collections.ConfigDict:
    """configs/digits.py with the study's budget, seed, learning rate factor and model changes.

    Warm-up is one epoch (the recipe's two would be a large part of a short run); evaluation only
    at the end; a checkpoint only at the end (fine-tunes start from it)."""
    c = digits_recipe.get_config()
    c.seed = int(seed)
    c.num_epochs = float(budget.epochs)
    c.batch_size = int(budget.batch_size)
    c.optim.lr = float(c.optim.lr) * lr_scale
    c.optim.warmup_epochs = min(1.0, float(budget.epochs) / 4)
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.log_every_steps = int(budget.log_every_steps)
    c.keep_checkpoints = 1
    c.model_overrides.update(model_overrides)
    return c


def config_key(config: ml_collections.ConfigDict) -> str:
    return hashlib.sha1(config.to_json(sort_keys=True).encode()).hexdigest()[:12]


class Runner:
    """Trains configs into `root/<label>-<key>` once each; `train` returns the `Run`."""

    def __init__(self, root: str):
        self.root = root
        self._done: Dict[str, Run] = {}

    def train(self, label: str, config: ml_collections.ConfigDict) -> Run:
        key = config_key(config)
        if key in self._done:
            return dataclasses.replace(self._done[key], label=label)
        workdir = os.path.join(self.root, f'{label}-{key}')
        if os.path.isdir(workdir):
            raise FileExistsError(f'{workdir} exists: a run from another invocation; use an empty --work dir')
        t = time.perf_counter()
        state, diverged = None, None
        try:
            state = trainer.train_and_evaluate(config, workdir)
        except trainer.NonFiniteLossError:
            diverged = 'nan'
        records = metrics.read_metrics(workdir)
        losses = [{'step': int(r['step']), 'loss': float(r['loss'])} for r in records if 'loss' in r]
        evals = [r['eval_top1'] for r in records if 'eval_top1' in r]
        if diverged is None and losses and not losses[-1]['loss'] < losses[0]['loss']:
            diverged = 'loss above its start'
        run = Run(label=label, workdir=workdir, losses=losses, diverged=diverged,
                  top1=float(evals[-1]) if evals and diverged != 'nan' else None,
                  seconds=time.perf_counter() - t, state=state,
                  model=objectives.build_model(config, 10))
        if run.top1 is not None and not math.isfinite(run.top1):
            run.top1 = None
        self._done[key] = run
        print(f'[paper_claims]   {label}: top-1 {run.top1}, {"diverged: " + diverged if diverged else "trained"}, '
              f'{run.seconds:.0f} s', flush=True)
        return run
