"""Training checkpoints: Orbax CheckpointManager under DIR/checkpoints, and the SIGTERM handler.

Each step directory holds two items:
  state/  the training state {'step', 'params', 'opt_state'[, 'ema_params']} (sharded arrays:
          every process writes its shards and restores into the shardings it asks for)
  meta/   JSON: the model's architecture (`model_fields`), the model name and the config, so that a
          training checkpoint can also be an `init_from` source without its config.
Orbax writes a step into a temporary directory and renames it when complete (atomic), keeps the
last `keep` steps, and ignores the temporary directories a killed run leaves behind.
Saves are asynchronous: the arrays are copied off the devices before `save` returns (so the step
that follows may donate them) and written in the background; `wait()` blocks until written.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
from typing import Any, Dict, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'checkpoints_corrupt'     # damaged steps are moved here, never deleted
STATE, META = 'state', 'meta'


class CheckpointRestoreError(ValueError):
    """No checkpoint of the workdir restores: they are damaged, or the config no longer fits them."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (a full disk, a quota, a lost mount); the run stops."""

    def __init__(self, code: int, message: str):
        super().__init__(message)       # str(error) is the message alone, no '[Errno 28]'
        self.errno = code


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
    """Save and restore the training state of one run (every process takes part)."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        # A writer removes the temporary directories a killed run left; a reader (init_from of
        # another run's workdir, perhaps still training) must not touch them.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)), create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, META))
        # Orbax does that cleanup in a background thread and waits for it only at the first save;
        # finish it now, so that it never overlaps our own file operations.
        await_cleanup = getattr(self.manager, '_maybe_await_cleanup_tmp_directory', None)
        if await_cleanup is not None:
            await_cleanup()

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Dict[str, Any], meta: Dict[str, Any]) -> bool:
        saved = self.manager.save(int(step), args=ocp.args.Composite(
            **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}), force=True)
        return bool(saved)

    def restore(self, abstract_state: Dict[str, Any], step: Optional[int] = None, placement: str = ''
                ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(state, meta) at `step` (default latest); `abstract_state` carries shapes and shardings.

        The arrays are read into the shardings of `abstract_state`, not those they were saved
        with: a state saved on N devices (any mode) restores on M devices (any mode); every
        process reads the shards it holds. `placement` describes the target for error messages.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f'no checkpoint in {self.directory}')
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(
                f'cannot restore the checkpoint at step {step} of {self.directory} onto '
                f'{placement or "this run"}: {type(e).__name__}: {e}. The state must have the shapes '
                f'the checkpoint was saved with (the same model and optimizer config; the device count '
                f'and the sharding mode may differ); use another --workdir to start afresh, or '
                f'init_from to take only its parameters.') from e
        return out[STATE], out[META]

    # ---- resume: the newest step that restores ------------------------------------------------

    def restore_newest(self, abstract_state: Dict[str, Any], placement: str = ''
                       ) -> Optional[Tuple[Dict[str, Any], Dict[str, Any], int]]:
        """(state, meta, step) of the newest step that restores; None when there is no step.

        A damaged step (empty, a file missing or truncated) is moved to <workdir>/checkpoints_corrupt
        with a warning naming it and why, and the next older step is tried. A step whose stored
        shapes do not fit `abstract_state` is a changed config, not damage: CheckpointRestoreError
        at once, nothing moved. When every step was damaged, CheckpointRestoreError too (the run
        does not silently start afresh). Every process takes part; process 0 moves the files.
        """
        from swinv2_jax.train import multihost
        moved: List[Tuple[int, str, str]] = []
        for step in self.steps_on_disk():
            reason = _damage(os.path.join(self.directory, str(step)))
            mismatch = None
            if reason is None:
                try:
                    mismatch = shape_mismatch(_stored_tree(os.path.join(self.directory, str(step), STATE)),
                                              abstract_state)
                except Exception as e:  # noqa: BLE001  unreadable metadata is damage, whatever raised
                    reason = f'unreadable metadata ({_first_line(e)})'
            reason = multihost.first_failure(reason)
            if reason is None and mismatch is not None:
                raise CheckpointRestoreError(self._config_changed(step, mismatch, placement, moved))
            if reason is None:
                try:
                    out = self.manager.restore(step, args=ocp.args.Composite(
                        **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}))
                except Exception as e:  # noqa: BLE001  TensorStore, zstd, JSON, OS errors alike
                    reason = f'unreadable array data ({_first_line(e)})'
                reason = multihost.first_failure(reason)
            if reason is None:
                return out[STATE], out[META], step
            moved.append((step, reason, self._move_aside(step, reason)))
        if moved:
            raise CheckpointRestoreError(self._all_damaged(moved))
        return None

    def steps_on_disk(self) -> List[int]:
        """Every step directory, newest first: Orbax's list and numbered directories it skips."""
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        return sorted(set(self.manager.all_steps()) | {int(n) for n in names if n.isdigit()}, reverse=True)

    def _move_aside(self, step: int, reason: str) -> str:
        corrupt = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
        slug = ''.join(c if c.isalnum() else '-' for c in reason.split(' (')[0].lower()).strip('-')[:60]
        target = os.path.join(corrupt, f'{step}-{slug}')
        if jax.process_index() == 0:
            os.makedirs(corrupt, exist_ok=True)
            n = 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(corrupt, f'{step}-{slug}-{n}')
            shutil.move(os.path.join(self.directory, str(step)), target)
            logging.warning('checkpoint step %d of %s does not restore: %s. Moved it to %s (kept, not '
                            'deleted); trying the step before it.', step, self.directory, reason, target)
        from swinv2_jax.train import multihost
        multihost.barrier(f'checkpoint_moved_{step}')
        self.manager.reload()
        return target

    def _config_changed(self, step, mismatch, placement, moved) -> str:
        before = (f' (damaged newer steps were moved aside first: '
                  f'{"; ".join(f"step {s} to {t}: {r}" for s, r, t in moved)})' if moved else '')
        return (f'the checkpoint at step {step} of {self.directory} does not fit this run'
                f'{" on " + placement if placement else ""}: {mismatch}. Its files are intact: the '
                f'config changed since it was saved (model, optimizer or EMA settings; the device count '
                f'and the sharding mode may change freely){before}. To continue that run, use the config '
                f'it was saved with (stored in {os.path.join(self.directory, str(step), META)}); to '
                f'train with the new config, pass another --workdir, with --config.init_from='
                f'{os.path.dirname(self.directory)} to start from its parameters.')

    def _all_damaged(self, moved) -> str:
        steps = '; '.join(f'step {s}: {r} -> moved to {t}' for s, r, t in moved)
        return (f'no checkpoint in {self.directory} restores: every step is damaged (files missing, '
                f'empty or truncated: not a config change). {steps}. To start afresh in this workdir, '
                f'rerun the same command (training starts at step 0; the damaged steps stay where they '
                f'were moved); to resume instead, copy an intact step directory (e.g. from a backup) '
                f'into {self.directory} and rerun.')

    # ---- saving: space, failures ---------------------------------------------------------------

    def check_free_space(self, nbytes: int) -> None:
        """CheckpointSaveError unless the workdir's filesystem has room for a checkpoint of
        `nbytes` (the state's array bytes: Orbax compresses, so that is an upper bound)."""
        free = shutil.disk_usage(os.path.dirname(self.directory)).free
        if free < nbytes:
            raise CheckpointSaveError(errno.ENOSPC, (
                f'not enough space for a checkpoint in {self.directory}: a checkpoint of this run '
                f'takes up to {_mb(nbytes)}, the filesystem has {_mb(free)} free. Free some space '
                f'there or pass a --workdir on a larger disk, then rerun the same command.'))

    def save_or_stop(self, step: int, state: Dict[str, Any], meta: Dict[str, Any], nbytes: int) -> None:
        """`save`, first surfacing a failure of the previous (background) save; any failure ends
        the run with CheckpointSaveError (what failed, the size, the free space, what to do)."""
        from swinv2_jax.train import multihost
        multihost.stop_together(lambda: self.check(step, nbytes))   # every process, or none, saves

        try:
            self.save(step, state, meta)
        except Exception as e:  # noqa: BLE001  Orbax/TensorStore raise many types for one failure
            raise self._save_error(step, e, nbytes) from e

    def check(self, step: int, nbytes: int) -> None:
        """Raise CheckpointSaveError now if a background save has failed (cheap: no waiting)."""
        try:
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(step, e, nbytes) from e

    def wait_or_stop(self, step: int, nbytes: int) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(step, e, nbytes) from e

    def _save_error(self, step: int, e: BaseException, nbytes: int) -> CheckpointSaveError:
        try:
            self.manager.wait_until_finished()   # a save still in flight may yet complete
        except Exception:  # noqa: BLE001  (this very failure, raised again)
            pass
        free = shutil.disk_usage(os.path.dirname(self.directory)).free
        steps = [s for s in self.steps_on_disk() if _damage(os.path.join(self.directory, str(s))) is None]
        kept = (f'the last complete checkpoint is step {steps[0]}' if steps else 'no checkpoint was completed')
        full = _is_disk_full(e)
        what = ('the disk is full' if full else f'{type(e).__name__}: {_first_line(e)}')
        return CheckpointSaveError(errno.ENOSPC if full else errno.EIO, (
            f'saving a checkpoint (by step {step}) into {self.directory} failed: {what}. A checkpoint of '
            f'this run takes up to {_mb(nbytes)}; the filesystem has {_mb(free)} free. Training stopped; '
            f'{kept} (nothing before it is lost). Free space there (or lower keep_checkpoints, or move '
            f'the workdir to a larger disk) and rerun the same command to resume.'))

    def restore_meta(self, step: Optional[int] = None) -> Dict[str, Any]:
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

    def restore_params(self, abstract_params: Any, step: Optional[int] = None, key: str = 'params',
                       sharding: Optional[jax.sharding.Sharding] = None) -> Any:
        """Only the parameters (`key`: 'params' or 'ema_params') of a checkpoint (fine-tuning), as
        whole arrays on `sharding` (default: this process' first device)."""
        step = self.latest_step() if step is None else step
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        out = self.manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
            item={key: abstract_params},
            restore_args={key: jax.tree.map(lambda a: ocp.ArrayRestoreArgs(
                sharding=sharding, global_shape=a.shape, dtype=a.dtype), abstract_params)},
            partial_restore=True)}))
        return out[STATE][key]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the last save and close. A failure here was reported already (wait_or_stop, or
        the error that ended the loop), so it is logged (traceback in the log file), not raised."""
        try:
            self.manager.wait_until_finished()
            self.manager.close()
        except Exception as e:  # noqa: BLE001
            logging.warning('closing the checkpoints of %s: %s', self.directory, _first_line(e), exc_info=True)


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The innermost cause's message, on one line: TensorStore's own words ('OUT_OF_RANGE: ...',
    'Truncated Zstd-compressed stream'), not Orbax's wrapper around them."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = ' '.join(str(e).split())
    text = text.split(' See full TensorStore details')[0]
    return (text[:limit] + '...') if len(text) > limit else (text or type(e).__name__)


def _mb(nbytes: int) -> str:
    return f'{nbytes / 2 ** 20:.1f} MiB'


def _is_disk_full(e: Optional[BaseException]) -> bool:
    while e is not None:
        if getattr(e, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or 'No space left' in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _damage(step_dir: str) -> Optional[str]:
    """Why a step directory cannot be a checkpoint by its files alone (None: they are there)."""
    if not os.path.isdir(step_dir) or not os.listdir(step_dir):
        return 'empty step directory'
    for need in (os.path.join(STATE, '_METADATA'), os.path.join(META, 'metadata')):
        if not os.path.isfile(os.path.join(step_dir, need)):
            return f'missing {need}'
    return None


def _stored_tree(state_dir: str) -> Dict[str, Any]:
    from etils import epath
    md = ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir))
    return dict(getattr(md, 'tree', md))


def shape_mismatch(stored: Dict[str, Any], abstract: Dict[str, Any]) -> Optional[str]:
    """How a stored state's shapes differ from `abstract` (None: they fit). Parameters are compared
    by name; the optimizer state by its arrays' shapes (its tree types are not stored)."""
    from swinv2_jax.weights.tree_diff import diff_trees
    stored = {k: v for k, v in stored.items() if v is not None}
    abstract = {k: v for k, v in abstract.items() if v is not None}
    problems = []
    if set(stored) != set(abstract):
        problems.append(f'the checkpoint holds {sorted(stored)}, this run {sorted(abstract)}')
    for key in sorted(set(stored) & set(abstract)):
        if key in ('params', 'ema_params'):
            plain = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), stored[key])
            diff = diff_trees(abstract[key], plain, given_word='checkpoint', expected_word='model')
            problems += [f'{key} {line}' if len(line) < 300 else f'{key} {line[:300]}...' for line in diff.lines()]
        else:
            have = sorted(tuple(getattr(m, 'shape', ())) for m in jax.tree.leaves(stored[key]))
            want = sorted(tuple(a.shape) for a in jax.tree.leaves(abstract[key]))
            if have != want:
                problems.append(f'{key}: {len(have)} arrays in the checkpoint, {len(want)} in this run, '
                                f'of other shapes')
    if not problems:
        return None
    text = '; '.join(problems)
    return text if len(text) < 1000 else text[:1000] + '...'


def latest_step(workdir: str) -> Optional[int]:
    """The latest complete checkpoint step of a run (None when there is none); writes nothing."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    ckpt = Checkpointer(workdir, read_only=True, async_save=False)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


# ----------------------------------------------------------------------------------------------
# SIGTERM: finish the step, save, exit cleanly
# ----------------------------------------------------------------------------------------------

class PreemptionHandler:
    """Turns SIGTERM (and SIGINT, once) into a flag the loop checks after every step.

    The loop then saves a checkpoint of the step it reached and returns normally. A second
    SIGINT falls through to Python's KeyboardInterrupt. Only the main thread can install signal
    handlers; elsewhere (a test runner thread) this is a no-op flag that is never set.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self._event = threading.Event()
        self._previous = {}
        self._signals = signals
        self.received: Optional[int] = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        del frame
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        self._event.set()
        logging.warning('received %s: saving a checkpoint at the end of this step, then stopping',
                        signal.Signals(signum).name)

    def is_set(self) -> bool:
        return self._event.is_set()
