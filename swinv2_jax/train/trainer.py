"""`train_and_evaluate(config, workdir)`: the training loop, for every objective.

It reads top to bottom: mesh, input, model and optimizer, sharding (jax.eval_shape(init) ->
shardings -> jit(init, out_shardings)), steps (jit(train_step, donate) / jit(eval_step)),
restore (or init_from), loop, evals. What differs between objectives (model, steps, evaluation
metrics, checkpoint meta) is the objective module `config.objective` picks
(swinv2_jax/train/objectives/). The data (swinv2_jax.data) is the contract of
docs/training_contract.md: the batch at step s is a pure function of (seed, s), so a run restored
at step s continues exactly as if never stopped.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from swinv2_jax.compile_options import inference_compiler_options
from swinv2_jax.models import abstract_variables
from swinv2_jax.train import (checkpointing, common, config_checks, config_lib, init_from, metrics, multihost,
                              objectives, optim, sharding)
from swinv2_jax.train.common import TrainState


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; the last good checkpoint is kept."""


def _data():
    from swinv2_jax import data  # TensorFlow is imported here, not when the package is
    return data


@dataclasses.dataclass(frozen=True)
class Run:
    """What the sections after the mesh share: the config and the run's fixed layout."""
    config: ml_collections.ConfigDict
    workdir: str
    data: Any                        # swinv2_jax.data, or a stand-in with its API (tests)
    objective: ModuleType            # a row of objectives.OBJECTIVES
    model: Any
    mesh: jax.sharding.Mesh
    lengths: Dict[str, Any]          # train_lengths()
    data_sharding: jax.sharding.Sharding
    local_batch: int
    local_eval_batch: int

    @property
    def image_size(self) -> Tuple[int, int]:
        return tuple(self.model.img_size)

    @property
    def total_steps(self) -> int:
        return self.lengths['total_steps']

    @property
    def mode(self) -> str:
        return self.config.get('sharding', 'zero1')


def train_lengths(config, num_train_examples: int) -> Dict[str, Any]:
    """Steps (batches), optimizer updates and warm-up of the run."""
    steps_per_epoch = num_train_examples // int(config.batch_size)
    if steps_per_epoch < 1 and int(config.num_train_steps) <= 0:
        raise ValueError(f'batch_size={config.batch_size} is larger than the {num_train_examples} '
                         f'training examples; lower it or set num_train_steps')
    if int(config.num_train_steps) > 0:
        total = int(config.num_train_steps)
    else:
        total = int(math.ceil(float(config.num_epochs) * steps_per_epoch))
    k = int(config.optim.grad_accum_steps)
    if k < 1:
        raise ValueError(f'optim.grad_accum_steps must be >= 1, got {k}')
    return dict(steps_per_epoch=max(steps_per_epoch, 1), total_steps=total, total_updates=max(total // k, 1),
                updates_per_epoch=max(steps_per_epoch, 1) / k)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train (or with `eval_only` evaluate) the config's model; checkpoints and metrics in workdir.

    Resumes from the latest checkpoint in workdir when there is one. Returns the final state.
    Raises NonFiniteLossError on a NaN/inf loss or gradient norm.
    """
    objective = objectives.get(config)
    data = objective.data() if hasattr(objective, 'data') else _data()   # segmentation: its own input
    multihost.stop_together(lambda: config_checks.check(
        config, os.path.abspath(workdir), extra=getattr(data, 'dataset_errors', None),
        num_devices=jax.device_count(), num_processes=jax.process_count(),
        objectives=tuple(objectives.OBJECTIVES), sharding_modes=tuple(sharding.MODES),
        schedules=tuple(optim.SCHEDULES)))
    workdir = _prepare_workdir(config, workdir)

    # ---- mesh --------------------------------------------------------------------------------------
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):

        # ---- input -------------------------------------------------------------------------------
        info = multihost.stop_together(lambda: data.dataset_info(config))   # folder images checked here
        model = objective.build_model(config, info.num_classes)
        run = Run(config=config, workdir=workdir, data=data, objective=objective, model=model, mesh=mesh,
                  lengths=train_lengths(config, info.num_train_examples),
                  data_sharding=sharding.batch_sharding(mesh),
                  local_batch=sharding.check_batch_size(int(config.batch_size), mesh),
                  local_eval_batch=sharding.check_batch_size(int(config.eval_batch_size), mesh,
                                                             'eval_batch_size'))
        logging.info('mesh %s over %d devices (%d processes); global batch %d, %d per process',
                     dict(mesh.shape), mesh.devices.size, jax.process_count(), config.batch_size,
                     run.local_batch)

        # ---- model and optimizer -----------------------------------------------------------------
        tx, schedule = _optimizer(run)
        init_state = _state_initializer(run, tx)

        # ---- sharding: from shapes, before anything is allocated ---------------------------------
        rng = common.init_rng(int(config.seed))
        abstract_state = jax.eval_shape(init_state, rng)
        state_shardings = sharding.state_shardings(abstract_state, mesh, run.mode)
        state = jax.jit(init_state, out_shardings=state_shardings)(rng)

        # ---- steps -------------------------------------------------------------------------------
        train_step, eval_step = objective.step_functions(model, config, tx=tx, schedule=schedule)
        repl = sharding.replicated(mesh)
        p_train_step = jax.jit(train_step, in_shardings=(state_shardings, run.data_sharding),
                               out_shardings=(state_shardings, repl), donate_argnums=(0,))
        p_eval_step = jax.jit(eval_step, in_shardings=(state_shardings.eval_inputs(state_shardings.params),
                                                       run.data_sharding),
                              out_shardings=repl,
                              compiler_options=inference_compiler_options())  # Eigen matmuls on CPU

        # ---- restore, or initialise from a pretrained model ---------------------------------------
        ckpt = checkpointing.Checkpointer(workdir, keep=int(config.keep_checkpoints))
        state, restored = _restore(run, ckpt, state, abstract_state, state_shardings)
        start_step = int(state.step)
        memory = _describe_state(run, state, abstract_state)
        writer = metrics.MetricWriter(workdir, run.total_steps, start_step,
                                      progress=not config.eval_only and start_step < run.total_steps)
        if start_step == 0:
            writer.write(0, {**memory, 'total_steps': run.total_steps})

        # ---- loop and evals ----------------------------------------------------------------------
        evaluate = _evaluator(run, p_eval_step)
        try:
            if config.eval_only:
                if not restored and not config.init_from:
                    logging.warning('eval_only with neither a checkpoint in %s nor init_from: evaluating '
                                    'a randomly initialised model', workdir)
                results = evaluate(state)
                writer.write(start_step, results)
                writer.log(f'eval at step {start_step}: {_fmt(results)}')
                return state
            meta = {'model_name': config.model, **objective.meta_fields(model),
                    'config': config.to_json_best_effort()}
            state = _loop(run, state, train_step=p_train_step, evaluate=evaluate, ckpt=ckpt, writer=writer,
                          meta=meta)
        finally:
            writer.close()
            ckpt.close()
    return state


# ----------------------------------------------------------------------------------------------
# The sections' parts
# ----------------------------------------------------------------------------------------------

def _prepare_workdir(config, workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    if (config.get('init_from_required', False) and not config.init_from and not config.eval_only
            and checkpointing.latest_step(workdir) is None):
        raise ValueError('this config fine-tunes a pretrained model: pass --config.init_from=PATH (a '
                         'converted checkpoint directory, a PyTorch file or a training workdir)')
    os.makedirs(workdir, exist_ok=True)
    return workdir


def _optimizer(run: Run):
    """(tx, schedule) over the model's parameter shapes (nothing allocated)."""
    config, model = run.config, run.model
    abstract_params = abstract_variables(model)['params']
    tx, schedule = optim.make_optimizer(
        config.optim, abstract_params, model.depths, run.lengths['total_updates'],
        run.lengths['updates_per_epoch'], config_lib.effective_batch(config))
    if float(config.optim.layer_decay) != 1.0:
        logging.info('layer-wise lr decay %s:\n%s', config.optim.layer_decay,
                     optim.describe(abstract_params, model.depths, config.optim))
    return tx, schedule


def _state_initializer(run: Run, tx) -> Callable[[jax.Array], TrainState]:
    model, ema = run.model, float(run.config.optim.ema_decay) > 0

    def init_state(rng) -> TrainState:
        variables = model.init(rng, jnp.zeros((1, *run.image_size, model.in_chans), jnp.float32))
        params = variables['params']
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          ema_params=params if ema else None, batch_stats=variables.get('batch_stats'))
    return init_state


def _restore(run: Run, ckpt: checkpointing.Checkpointer, state: TrainState, abstract_state: TrainState,
             state_shardings: TrainState) -> Tuple[TrainState, bool]:
    """(state, whether a checkpoint of this run was restored): the latest checkpoint into this run's
    mesh and mode (whatever the saving run's were), else init_from's parameters, else `state`."""
    found = ckpt.restore_newest(sharding.with_shardings(abstract_state.to_checkpoint(),
                                                        state_shardings.to_checkpoint()),
                                placement=f'{run.mesh.devices.size} devices, sharding {run.mode!r}')
    if found is not None:
        state = TrainState.from_checkpoint(found[0])
        logging.info('resumed from %s at step %d', ckpt.directory, int(state.step))
        return state, True
    if run.config.init_from:
        params, _ = init_from.load_pretrained(run.config.init_from, run.model, state.params,
                                              run.config.get('init_head_map', ''))
        params = jax.device_put(params, state_shardings.params)
        ema = None
        if float(run.config.optim.ema_decay) > 0:  # a copy: the step donates both trees, so no shared buffers
            ema = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=state_shardings.params)(params)
        state = state.replace(params=params, ema_params=ema)
    return state, False


def _describe_state(run: Run, state: TrainState, abstract_state: TrainState) -> Dict[str, Any]:
    """Log the model and the state's bytes per device; return the latter (the first metrics record)."""
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_state.params))
    logging.info('%s: %d parameters, %d steps (%d per epoch, %d updates), %s', run.config.model, n_params,
                 run.total_steps, run.lengths['steps_per_epoch'], run.lengths['total_updates'],
                 _classes(run.model) + str(run.image_size))
    memory = {'num_params': n_params, 'sharding': run.mode, 'num_devices': int(run.mesh.devices.size),
              'num_processes': jax.process_count(),
              'params_bytes_per_device': sharding.bytes_per_device(state.params),
              'opt_state_bytes_per_device': sharding.bytes_per_device(state.opt_state),
              'params_bytes': sharding.global_bytes(state.params),
              'opt_state_bytes': sharding.global_bytes(state.opt_state)}
    if state.ema_params is not None:
        memory['ema_bytes_per_device'] = sharding.bytes_per_device(state.ema_params)
    logging.info('state per device (sharding %r over %d devices): %s', run.mode, run.mesh.devices.size,
                 _fmt(memory))
    return memory


def _classes(model) -> str:
    n = getattr(model, 'num_classes', 0)
    return f'{n} classes, ' if n else ''


def _evaluator(run: Run, p_eval_step) -> Callable[[TrainState], Dict[str, float]]:
    """evaluate(state): the objective's metrics on every evaluation set, of the params and the EMA."""
    def of(inputs) -> Dict[str, float]:
        return common.evaluate(p_eval_step, inputs, data=run.data, config=run.config,
                               image_size=run.image_size, local_batch_size=run.local_eval_batch,
                               data_sharding=run.data_sharding, metrics_of=run.objective.eval_metrics)

    def evaluate(state: TrainState) -> Dict[str, float]:
        t = time.perf_counter()
        out = of(state.eval_inputs(state.params))
        if state.ema_params is not None:
            out.update({'ema_' + key: v for key, v in of(state.eval_inputs(state.ema_params)).items()})
        out['eval_seconds'] = time.perf_counter() - t
        return out
    return evaluate


def _check_finite(step: int, scalars: Dict[str, float], ckpt: checkpointing.Checkpointer) -> None:
    bad = {k: scalars[k] for k in ('loss', 'grad_norm') if k in scalars and not math.isfinite(scalars[k])}
    if bad:
        ckpt.wait()
        last = ckpt.latest_step()
        kept = (f'the last good checkpoint is step {last} in {ckpt.directory}' if last is not None
                else 'no checkpoint was saved before it')
        raise NonFiniteLossError(
            f'non-finite {" and ".join(f"{k}={v}" for k, v in bad.items())} at step {step}: stopping; '
            f'{kept} (nothing past it is saved). Rerunning the same command resumes from it; lower '
            f'optim.lr, keep optim.clip_grad on, or look for broken inputs.')


def _fmt(d: Dict[str, Any]) -> str:
    return ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in d.items())


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def _loop(run: Run, state: TrainState, *, train_step, evaluate, ckpt: checkpointing.Checkpointer,
          writer: metrics.MetricWriter, meta: Dict[str, Any]) -> TrainState:
    config, total_steps, start_step = run.config, run.total_steps, int(state.step)
    log_every = max(1, int(config.log_every_steps))
    eval_every = int(config.eval_every_steps)
    ckpt_every = int(config.checkpoint_every_steps)
    batches = common.device_batches(
        run.data.train_iterator(config, image_size=run.image_size, local_batch_size=run.local_batch,
                                start_step=start_step, process_index=jax.process_index(),
                                process_count=jax.process_count()),
        run.data_sharding)

    meter = metrics.Meter()
    pending: Optional[Tuple[int, Dict]] = None   # the last step's metrics, still on the devices

    def flush():
        """Fetch the pending step's scalars (stop on NaN), feed the meter and the progress bar."""
        nonlocal pending
        if pending is None:
            return
        s, m = pending
        pending = None
        scalars = {key: float(v) for key, v in jax.device_get(m).items()}
        _check_finite(s, scalars, ckpt)
        meter.add(scalars)
        writer.progress(s, loss=scalars['loss'], lr=scalars['lr'])

    ckpt_bytes = sharding.global_bytes(state.to_checkpoint())
    multihost.stop_together(lambda: ckpt.check_free_space(ckpt_bytes))
    step = start_step
    with checkpointing.PreemptionHandler() as preemption:
        while step < total_steps:
            state, step_metrics = train_step(state, next(batches))
            flush()                           # the previous step: keeps one step in flight
            step += 1
            pending = (step, step_metrics)
            last = step == total_steps

            if step % log_every == 0 or last:
                flush()
                summary = meter.summary(int(config.batch_size))
                summary['epoch'] = step / run.lengths['steps_per_epoch']
                writer.write(step, summary)
                writer.log(f'step {step}/{total_steps}: {_fmt(summary)}', shown_by_bar=True)
                meter.reset()
            if jax.process_count() == 1:     # a failed background save stops the run at once (several
                ckpt.check(step, ckpt_bytes)  # processes agree on it at the next save instead)
            # The checkpoint before the evaluation: an evaluation that fails loses no training.
            if (ckpt_every > 0 and step % ckpt_every == 0) or last or preemption.is_set():
                flush()                       # never save a state whose loss was not checked
                t = time.perf_counter()
                ckpt.save_or_stop(step, state.to_checkpoint(), meta, ckpt_bytes)
                meter.pause(time.perf_counter() - t)
            if (eval_every > 0 and step % eval_every == 0) or last:
                flush()
                t = time.perf_counter()
                ckpt.wait_or_stop(step, ckpt_bytes)   # the step's checkpoint is on disk first
                meter.pause(time.perf_counter() - t)
                results = evaluate(state)
                meter.pause(results['eval_seconds'])
                writer.write(step, results)
                writer.log(f'eval at step {step}: {_fmt(results)}')
            if preemption.is_set() and not last:
                ckpt.wait_or_stop(step, ckpt_bytes)
                logging.warning('stopped at step %d after a signal; the checkpoint is saved. Run the '
                                'same command to continue.', step)
                break
        flush()
    ckpt.wait_or_stop(step, ckpt_bytes)
    return state


__all__ = ['NonFiniteLossError', 'Run', 'TrainState', 'train_and_evaluate', 'train_lengths']
