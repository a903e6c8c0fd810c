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

import os
import signal
import threading
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = 'checkpoints'
STATE, META = 'state', 'meta'


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
        self.manager.wait_until_finished()
        self.manager.close()


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
