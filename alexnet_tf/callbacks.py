"""Keras callbacks for training: progress, and what makes a run survive a kill (the
TensorBoard logs are `alexnet_tf.tensorboard_logs`'s).

Survival rules (the files themselves are `alexnet_tf.run.Run`'s, written atomically):
- `ResumableState` writes the state to resume from (weights with optimizer
  state, the epoch, the best validation error, the schedule's counters) at
  the end of every epoch.
- `AtomicWeights` writes best/latest weights: a half-written checkpoint is
  never the checkpoint.
- `StopOnNonFiniteLoss` and `StopOnSignal` *raise* at the end of a batch
  rather than setting `model.stop_training`: Keras would still run every
  callback's `on_epoch_end` for the cut-short epoch (saving a NaN or partial
  state as if the epoch had finished); an exception leaves the last complete
  state as it was.
"""

import collections
import math
import pathlib
import signal
import time

import keras
import numpy as np

from alexnet_tf import run as run_lib


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_s` (training images per second of training steps) to the epoch's logs."""

    def __init__(self, global_batch_size):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps, self._last = time.perf_counter(), 0, None

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._steps:
            logs["images_per_s"] = self._steps * self.global_batch_size / (self._last - self._start)


class WallClock(keras.callbacks.Callback):
    """Adds `wall_minutes` to the epoch's logs: minutes since the run started, counting the
    earlier processes of a resumed run (`minutes_before`), so that validation error can be
    read against the time it took (set-up, training and validation)."""

    def __init__(self, start_time, minutes_before=0.0):
        super().__init__()
        self.start_time = start_time
        self.minutes_before = float(minutes_before)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["wall_minutes"] = self.minutes_before + (time.time() - self.start_time) / 60.0


class LearningRateLog(keras.callbacks.Callback):
    """Adds the optimizer's current `learning_rate` to the epoch's logs (ReduceLROnPlateau does
    this itself; a learning-rate schedule does not)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class PlateauWarning(keras.callbacks.Callback):
    """Says once, in one line, when the training loss sits at ln(classes), the loss of a net
    that predicts every class equally: the known failure of AlexNet reproductions.

    It watches the last half epoch of steps (at least `min_steps`), once the run has taken
    `FIRST_CHECK` steps (every net starts at chance; one that learns leaves it within a few
    dozen steps): when the mean loss of both the older and the newer half of that window is
    within `TOLERANCE` of ln(classes), the loss is flat at chance (a net that is learning
    drifts away between the halves).
    Each step's loss comes from Keras's running mean of the epoch's loss. Training goes on:
    some nets leave the plateau later.
    """

    TOLERANCE = 0.02  # nats
    FIRST_CHECK = 100  # steps

    def __init__(self, num_classes, steps_per_epoch, min_steps=4):
        super().__init__()
        self.chance_loss = math.log(num_classes) if num_classes > 1 else None
        self.window = max(min_steps, steps_per_epoch // 2)
        self.warned = False
        self._recent = collections.deque(maxlen=self.window)
        self._epoch, self._running_mean, self._steps_taken = 0, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._running_mean = epoch, None

    def on_train_batch_end(self, batch, logs=None):
        running_mean = (logs or {}).get("loss")
        if self.warned or self.chance_loss is None or running_mean is None:
            return
        running_mean = float(running_mean)
        steps = batch + 1
        previous = self._running_mean
        self._running_mean = running_mean
        self._recent.append(running_mean if previous is None else steps * running_mean - (steps - 1) * previous)
        self._steps_taken += 1
        if self._steps_taken < max(self.FIRST_CHECK, self.window):
            return
        losses = list(self._recent)
        halves = (losses[: self.window // 2], losses[self.window // 2 :])
        if all(abs(sum(half) / len(half) - self.chance_loss) < self.TOLERANCE for half in halves):
            self.warned = True
            print(
                f"\nWarning: the training loss has stayed at ln({round(math.exp(self.chance_loss))}) = "
                f"{self.chance_loss:.3f}, chance level, for the last {self.window} steps (epoch {self._epoch + 1}): "
                f"the net is not learning yet. Known causes: the paper's biases of 1 at small scale (try "
                f"--init=paper_bias0.1), a learning rate too high or too low (--learning_rate). "
                f"Training continues.",
                flush=True,
            )


class AtomicWeights(keras.callbacks.Callback):
    """Saves the model's weights (no optimizer state) at each epoch end, or only on a new best
    `monitor` value, through the run's atomic write."""

    def __init__(self, run, path, monitor=None, best_so_far=None):
        super().__init__()
        self.run = run
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.best = math.inf if best_so_far is None else best_so_far

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or not value < self.best:
                return
            self.best = float(value)
        self.run.save_weights(self.model, self.path)


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose patience counters survive a resumption.

    The learning rate itself is optimizer state, restored with the weights.
    Keras resets the counters (`best`, `wait`, `cooldown_counter`) when `fit`
    starts; `counters()` is saved with each resume state and `restored`
    puts them back.
    """

    COUNTERS = ("best", "wait", "cooldown_counter")

    def __init__(self, *args, restored=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored = dict(restored or {})

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name, value in self.restored.items():
            setattr(self, name, value)

    def counters(self):
        return {name: getattr(self, name) for name in self.COUNTERS}

    @staticmethod
    def counters_from(monitor_values, patience, drops, min_delta=1e-4):
        """The counters after `monitor_values` (lower is better), by Keras's rule with no
        cooldown and its default `min_delta`: for a resume state written before the counters
        were saved with it."""
        if not monitor_values:
            return None
        best, wait, drops_left = None, 0, drops
        for value in monitor_values:
            if best is None or value - min_delta < best:
                best, wait = value, 0
            else:
                wait += 1
                if wait >= patience and drops_left:
                    wait, drops_left = 0, drops_left - 1
        return {"best": best, "wait": wait, "cooldown_counter": 0}


class ResumableState(keras.callbacks.Callback):
    """Writes the state an unfinished run resumes from at every epoch end (`Run.save_resume_state`):
    weights with optimizer state, the best monitored value so far and the schedule's counters.
    `Run.restore` reads it back before `fit`."""

    def __init__(self, run, best_checkpoint, schedule):
        super().__init__()
        self.run = run
        self.best_checkpoint = best_checkpoint
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        meta = {"best": run_lib.finite_or_none(self.best_checkpoint.best)}
        if isinstance(self.schedule, PlateauSchedule):
            meta["schedule"] = self.schedule.counters()
        self.run.save_resume_state(self.model, epoch + 1, meta)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, keeping the last good state."""

    def __init__(self, run):
        super().__init__()
        self.run = run
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            saved = self.run.last_saved_epoch()
            kept = f"the last good state (epoch {saved})" if saved else "no completed epoch"
            raise FloatingPointError(
                f"the loss became {float(loss)} at epoch {self._epoch + 1}, step {batch + 1}; training stopped "
                f"and {kept} is kept. Lower --learning_rate or check the data, then run the same command again."
            )


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; training stopped at a batch boundary."""

    def __init__(self, signal_number, message):
        super().__init__(message)
        self.signal_number = signal_number


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGINT/SIGTERM into a clean stop at the end of the current batch.

    Install with `with StopOnSignal(...) as stopper:` around `fit`. The
    state saved at the last epoch end stays the one to resume from.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run):
        super().__init__()
        self.run = run
        self.received = None
        self._previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, frame):
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = number
        print(f"\n{signal.Signals(number).name} received: stopping after this batch.", flush=True)

    def check(self):
        if self.received is None:
            return
        saved = self.run.last_saved_epoch()
        resume = f"epoch {saved + 1}" if saved else "the start"
        raise TrainingInterrupted(
            self.received,
            f"stopped by {signal.Signals(self.received).name}; run the same command again to resume from {resume}.",
        )

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()
