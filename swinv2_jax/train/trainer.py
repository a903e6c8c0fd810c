"""`train_and_evaluate(config, workdir)`: the training loop.

In order: input -> model -> mesh -> jax.eval_shape(init) -> shardings -> jit(init, out_shardings)
-> jit(train_step, donate) / jit(eval_step) -> restore (or init_from) -> loop. The data
(swinv2_jax.data) is the contract of docs/training_contract.md: the batch at step s is a pure
function of (seed, s), so a run restored at step s continues exactly as if never stopped.
"""
from __future__ import annotations

import collections
import functools
import math
import os
import re
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from swinv2_jax.compile_options import inference_compiler_options
from swinv2_jax.models import abstract_variables, create_model, model_fields
from swinv2_jax.train import checkpointing, config_lib, init_from, metrics, optim, sharding
from swinv2_jax.train import simmim as simmim_objective


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; the last good checkpoint is kept."""


class TrainState(struct.PyTreeNode):
    step: jax.Array                  # int32: batches consumed so far (the data step)
    params: Any
    opt_state: Any
    ema_params: Any = None           # None when optim.ema_decay == 0

    def to_checkpoint(self) -> Dict[str, Any]:
        out = {'step': self.step, 'params': self.params, 'opt_state': self.opt_state}
        if self.ema_params is not None:
            out['ema_params'] = self.ema_params
        return out

    @classmethod
    def from_checkpoint(cls, tree: Dict[str, Any]) -> 'TrainState':
        return cls(step=tree['step'], params=tree['params'], opt_state=tree['opt_state'],
                   ema_params=tree.get('ema_params'))


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------

def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over the batch of -sum(targets * log_softmax(logits)) (timm SoftTargetCrossEntropy)."""
    return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))


def init_rng(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 0)


def step_rngs(seed: int, step: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """(mix rng, dropout rng) of a step: a function of (seed, step) only, so resumes repeat them."""
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)
    return jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model, tx, schedule, mix_fn,
               seed: int, grad_accum_steps: int, ema_decay: float) -> Tuple[TrainState, Dict]:
    mix_rng, dropout_rng = step_rngs(seed, state.step)
    images, targets = mix_fn(mix_rng, batch['image'], batch['label'])

    def loss_fn(params):
        logits = model.apply({'params': params}, images, train=True, rngs={'dropout': dropout_rng})
        return soft_cross_entropy(logits, targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return apply_gradients(state, loss, grads, tx=tx, schedule=schedule,
                           grad_accum_steps=grad_accum_steps, ema_decay=ema_decay)


def apply_gradients(state: TrainState, loss: jax.Array, grads: Any, *, tx, schedule,
                    grad_accum_steps: int, ema_decay: float) -> Tuple[TrainState, Dict]:
    """The optimizer update, EMA and step count of every objective's train step, and its metrics."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = optim.ema_update(ema, params, ema_decay, optim.did_update(opt_state, grad_accum_steps))
    # the lr the step used: the schedule at the update count before this step's update
    lr = schedule(state.step // grad_accum_steps)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'lr': lr,
                       'param_norm': optax.tree.norm(params)}


def eval_step(params, batch: Dict[str, jax.Array], *, model) -> Dict[str, jax.Array]:
    """Sums over the batch (padding masked out): top-1/top-5 hits, loss, example count."""
    logits = model.apply({'params': params}, batch['image'], train=False).astype(jnp.float32)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    hit1 = (top[:, 0] == labels).astype(jnp.float32)
    hit5 = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {'top1': jnp.sum(hit1 * mask), 'top5': jnp.sum(hit5 * mask), 'loss': jnp.sum(loss * mask),
            'count': jnp.sum(mask)}


# ----------------------------------------------------------------------------------------------
# Input on the devices
# ----------------------------------------------------------------------------------------------

def device_batches(iterator: Iterator[Dict[str, np.ndarray]], data_sharding, size: int = 2
                   ) -> Iterator[Dict[str, jax.Array]]:
    """Global arrays from each process' local batches, `size` batches ahead (copies are async)."""
    queue = collections.deque()

    def put(batch):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x), batch)

    for batch in iterator:
        queue.append(put(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


# ----------------------------------------------------------------------------------------------
# Setup helpers
# ----------------------------------------------------------------------------------------------

def _data():
    from swinv2_jax import data  # TensorFlow is imported here, not when the package is
    return data


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    if simmim_objective.enabled(config):   # objective 'simmim': SimMIM(encoder), no classes
        return simmim_objective.build_model(config)
    overrides = config_lib.as_overrides(config)
    overrides.setdefault('num_classes', num_classes)
    return create_model(config.model, **overrides)


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


def metric_prefix(index: int, name: str) -> str:
    """'eval' for the first evaluation set, 'eval_<name>' for the others (imagenet_v2:test ->
    eval_imagenet_v2_test)."""
    return 'eval' if index == 0 else 'eval_' + re.sub(r'[^0-9A-Za-z]+', '_', name).strip('_')


def eval_totals(p_eval_step, params, config, name: str, image_size, local_batch_size, data_sharding
                ) -> Dict[str, np.ndarray]:
    """The sums `p_eval_step` returns, added over every batch of the evaluation set `name`."""
    totals = None
    it = _data().eval_iterator(config, name, image_size=image_size, local_batch_size=local_batch_size,
                               process_index=jax.process_index(), process_count=jax.process_count())
    for batch in device_batches(it, data_sharding):
        sums = p_eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError(f'the evaluation set {name!r} is empty')
    return jax.device_get(totals)


def evaluate(p_eval_step, params, config, image_size, local_batch_size, data_sharding
             ) -> Dict[str, float]:
    """Top-1/top-5 (fractions) and loss on every evaluation set of the config."""
    out = {}
    for i, name in enumerate(_data().eval_names(config)):
        prefix = metric_prefix(i, name)
        totals = eval_totals(p_eval_step, params, config, name, image_size, local_batch_size, data_sharding)
        n = max(float(totals['count']), 1.0)
        out.update({f'{prefix}_top1': float(totals['top1']) / n, f'{prefix}_top5': float(totals['top5']) / n,
                    f'{prefix}_loss': float(totals['loss']) / n, f'{prefix}_examples': int(totals['count'])})
    return out


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


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train (or with `eval_only` evaluate) the config's model; checkpoints and metrics in workdir.

    Resumes from the latest checkpoint in workdir when there is one. Returns the final state.
    Raises NonFiniteLossError on a NaN/inf loss or gradient norm.
    """
    workdir = os.path.abspath(workdir)
    if (config.get('init_from_required', False) and not config.init_from and not config.eval_only
            and checkpointing.latest_step(workdir) is None):
        raise ValueError('this config fine-tunes a pretrained model: pass --config.init_from=PATH (a '
                         'converted checkpoint directory, a PyTorch file or a training workdir)')
    os.makedirs(workdir, exist_ok=True)
    data = _data()

    # ---- input ---------------------------------------------------------------------------------
    info = data.dataset_info(config)
    model = build_model(config, info.num_classes)
    lengths = train_lengths(config, info.num_train_examples)

    # ---- mesh ----------------------------------------------------------------------------------
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        return _run(config, workdir, data, info, model, lengths, mesh)


def _run(config, workdir, data, info, model, lengths, mesh) -> TrainState:
    """Everything from the batch layout on, with `mesh` set (jax.set_mesh)."""
    image_size = tuple(model.img_size)
    total_steps = lengths['total_steps']
    k = int(config.optim.grad_accum_steps)
    data_sharding = sharding.batch_sharding(mesh)
    local_batch = sharding.check_batch_size(int(config.batch_size), mesh)
    local_eval_batch = sharding.check_batch_size(int(config.eval_batch_size), mesh, 'eval_batch_size')
    logging.info('mesh %s over %d devices (%d processes); global batch %d, %d per process',
                 dict(mesh.shape), mesh.devices.size, jax.process_count(), config.batch_size, local_batch)

    # ---- model and optimizer --------------------------------------------------------------------
    ema_decay = float(config.optim.ema_decay)
    abstract_params = abstract_variables(model)['params']
    tx, schedule = optim.make_optimizer(
        config.optim, abstract_params, model.depths, lengths['total_updates'],
        lengths['updates_per_epoch'], config_lib.effective_batch(config))
    if float(config.optim.layer_decay) != 1.0:
        logging.info('layer-wise lr decay %s:\n%s', config.optim.layer_decay,
                     optim.describe(abstract_params, model.depths, config.optim))

    def init_state(rng) -> TrainState:
        params = model.init(rng, jnp.zeros((1, *image_size, model.in_chans), jnp.float32))['params']
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          ema_params=params if ema_decay > 0 else None)

    # ---- shardings: from shapes, before anything is allocated ------------------------------------
    rng = init_rng(int(config.seed))
    abstract_state = jax.eval_shape(init_state, rng)
    mode = config.get('sharding', 'zero1')
    state_shardings = sharding.state_shardings(abstract_state, mesh, mode)
    repl = sharding.replicated(mesh)

    # ---- init, step and eval functions -----------------------------------------------------------
    state = jax.jit(init_state, out_shardings=state_shardings)(rng)
    if simmim_objective.enabled(config):
        step_fn, eval_fn, evaluate_fn = simmim_objective.step_functions(model, tx, schedule, config, k, ema_decay)
    else:
        mix_fn = functools.partial(_mix, num_classes=model.num_classes, aug=config.aug)
        step_fn = functools.partial(train_step, model=model, tx=tx, schedule=schedule, mix_fn=mix_fn,
                                    seed=int(config.seed), grad_accum_steps=k, ema_decay=ema_decay)
        eval_fn, evaluate_fn = functools.partial(eval_step, model=model), evaluate
    p_train_step = jax.jit(
        step_fn,
        in_shardings=(state_shardings, data_sharding), out_shardings=(state_shardings, repl),
        donate_argnums=(0,))
    p_eval_step = jax.jit(eval_fn,
                          in_shardings=(state_shardings.params, data_sharding), out_shardings=repl,
                          compiler_options=inference_compiler_options())  # Eigen matmuls on CPU

    # ---- restore, or initialise from a pretrained model -------------------------------------------
    ckpt = checkpointing.Checkpointer(workdir, keep=int(config.keep_checkpoints))
    fields = (simmim_objective.meta_fields(model) if simmim_objective.enabled(config)  # + objective
              else {'model': model_fields(model)})
    meta = {'model_name': config.model, **fields, 'config': config.to_json_best_effort()}
    latest = ckpt.latest_step()
    if latest is not None:   # into this run's mesh and mode, whatever the saving run's were
        restored, _ = ckpt.restore(sharding.with_shardings(abstract_state.to_checkpoint(),
                                                           state_shardings.to_checkpoint()), latest,
                                   placement=f'{mesh.devices.size} devices, sharding {mode!r}')
        state = TrainState.from_checkpoint(restored)
        logging.info('resumed from %s at step %d', ckpt.directory, int(state.step))
    elif config.init_from:
        params, _ = init_from.load_pretrained(config.init_from, model, state.params,
                                              config.get('init_head_map', ''))
        params = jax.device_put(params, state_shardings.params)
        ema = None
        if ema_decay > 0:  # a copy: the step donates both trees, so they must not share buffers
            ema = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=state_shardings.params)(params)
        state = state.replace(params=params, ema_params=ema)
    start_step = int(state.step)

    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_state.params))
    writer = metrics.MetricWriter(workdir, total_steps, start_step,
                                  progress=not config.eval_only and start_step < total_steps)
    logging.info('%s: %d parameters, %d steps (%d per epoch, %d updates), %d classes, %s',
                 config.model, n_params, total_steps, lengths['steps_per_epoch'], lengths['total_updates'],
                 info.num_classes, image_size)
    memory = {'num_params': n_params, 'sharding': mode, 'num_devices': int(mesh.devices.size),
              'num_processes': jax.process_count(),
              'params_bytes_per_device': sharding.bytes_per_device(state.params),
              'opt_state_bytes_per_device': sharding.bytes_per_device(state.opt_state),
              'params_bytes': sharding.global_bytes(state.params),
              'opt_state_bytes': sharding.global_bytes(state.opt_state)}
    if state.ema_params is not None:
        memory['ema_bytes_per_device'] = sharding.bytes_per_device(state.ema_params)
    logging.info('state per device (sharding %r over %d devices): %s', mode, mesh.devices.size, _fmt(memory))
    if start_step == 0:
        writer.write(0, {**memory, 'total_steps': total_steps})

    def run_evals(state: TrainState) -> Dict[str, float]:
        t = time.perf_counter()
        out = evaluate_fn(p_eval_step, state.params, config, image_size, local_eval_batch, data_sharding)
        if state.ema_params is not None:
            ema = evaluate_fn(p_eval_step, state.ema_params, config, image_size, local_eval_batch, data_sharding)
            out.update({'ema_' + key: v for key, v in ema.items()})
        out['eval_seconds'] = time.perf_counter() - t
        return out

    try:
        if config.eval_only:
            if latest is None and not config.init_from:
                logging.warning('eval_only with neither a checkpoint in %s nor init_from: evaluating '
                                'a randomly initialised model', workdir)
            results = run_evals(state)
            writer.write(start_step, results)
            logging.info('eval at step %d: %s', start_step, _fmt(results))
            return state
        state = _loop(config, state, p_train_step, run_evals, ckpt, writer, meta, data, lengths,
                      image_size, local_batch, data_sharding, start_step)
    finally:
        writer.close()
        ckpt.close()
    return state


def _mix(rng, images, labels, *, num_classes, aug):
    return _data().mix(rng, images, labels, num_classes, aug)


def _fmt(d: Dict[str, Any]) -> str:
    return ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in d.items())


def _loop(config, state, p_train_step, run_evals, ckpt, writer, meta, data, lengths, image_size,
          local_batch, data_sharding, start_step) -> TrainState:
    total_steps = lengths['total_steps']
    log_every = max(1, int(config.log_every_steps))
    eval_every = int(config.eval_every_steps)
    ckpt_every = int(config.checkpoint_every_steps)
    batches = device_batches(
        data.train_iterator(config, image_size=image_size, local_batch_size=local_batch,
                            start_step=start_step, process_index=jax.process_index(),
                            process_count=jax.process_count()),
        data_sharding)

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

    step = start_step
    with checkpointing.PreemptionHandler() as preemption:
        while step < total_steps:
            batch = next(batches)
            state, step_metrics = p_train_step(state, batch)
            flush()                           # the previous step: keeps one step in flight
            step += 1
            pending = (step, step_metrics)
            last = step == total_steps

            if step % log_every == 0 or last:
                flush()
                summary = meter.summary(int(config.batch_size))
                summary['epoch'] = step / lengths['steps_per_epoch']
                writer.write(step, summary)
                logging.info('step %d/%d: %s', step, total_steps, _fmt(summary))
                meter.reset()
            if (eval_every > 0 and step % eval_every == 0) or last:
                flush()
                results = run_evals(state)
                meter.pause(results['eval_seconds'])
                writer.write(step, results)
                logging.info('eval at step %d: %s', step, _fmt(results))
            if (ckpt_every > 0 and step % ckpt_every == 0) or last or preemption.is_set():
                flush()                       # never save a state whose loss was not checked
                t = time.perf_counter()
                ckpt.save(step, state.to_checkpoint(), meta)
                meter.pause(time.perf_counter() - t)
            if preemption.is_set() and not last:
                ckpt.wait()
                logging.warning('stopped at step %d after a signal; the checkpoint is saved. Run the '
                                'same command to continue.', step)
                break
        flush()
    ckpt.wait()
    return state
