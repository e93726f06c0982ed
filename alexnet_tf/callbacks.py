"""Keras callbacks for training: progress, TensorBoard images, and what makes a run survive a kill.

Survival rules (see `train`):
- `ResumableState` writes the state to resume from (weights with optimizer
  state, the epoch, the best validation error) at the end of every epoch,
  into `epoch-NNNN.partial/`, then renames it `epoch-NNNN/`. A rename is
  atomic, so the newest complete `epoch-NNNN/` is always a consistent state,
  whatever moment a kill came at.
- `AtomicWeights` writes best/latest weights to a temporary file and renames
  it over the old one: a half-written checkpoint is never the checkpoint.
- `StopOnNonFiniteLoss` and `StopOnSignal` *raise* at the end of a batch
  rather than setting `model.stop_training`: Keras would still run every
  callback's `on_epoch_end` for the cut-short epoch (saving a NaN or partial
  state as if the epoch had finished); an exception leaves the last complete
  state as it was.
"""

import json
import math
import os
import pathlib
import shutil
import signal
import time

import keras
import numpy as np
import tensorflow as tf

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


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch, readable in logs that are not a terminal."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key, label in (
            ("loss", "loss"),
            ("top1_error", "top-1 err"),
            ("val_loss", "val loss"),
            ("val_top1_error", "val top-1 err"),
            ("val_top5_error", "val top-5 err"),
        ):
            if key in logs:
                parts.append(f"{label} {logs[key]:.4f}")
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        parts.append(f"lr {lr:.2g}")
        if "images_per_s" in logs:
            parts.append(f"{logs['images_per_s']:.1f} images/s")
        parts.append(f"{time.perf_counter() - self._start:.0f}s")
        print(" | ".join(parts), flush=True)


def filter_grid(kernel):
    """conv1's filters [kh, kw, 3, n] as one [1, H, W, 3] image, each filter scaled to [0, 1]."""
    kernel = np.asarray(kernel, np.float32)
    kh, kw, _, count = kernel.shape
    filters = np.moveaxis(kernel, -1, 0)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    filters = (filters - low) / np.maximum(high - low, 1e-12)
    columns = int(math.ceil(math.sqrt(count * 4 / 3)))  # a landscape grid: 12 x 8 for 96
    rows = int(math.ceil(count / columns))
    grid = np.ones((rows * (kh + 1) + 1, columns * (kw + 1) + 1, 3), np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = 1 + row * (kh + 1), 1 + column * (kw + 1)
        grid[top : top + kh, left : left + kw] = filters[index]
    return grid[None]


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard images: a few augmented training images once, conv1's filters every epoch."""

    def __init__(self, log_dir, augmented_images, mean_rgb):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "images"))
        self.augmented_images = augmented_images
        self.mean_rgb = np.asarray(mean_rgb, np.float32)

    def on_train_begin(self, logs=None):
        viewable = np.clip((self.augmented_images + self.mean_rgb) / 255.0, 0.0, 1.0)
        with self.writer.as_default():
            tf.summary.image("augmented_training_images", viewable, step=0, max_outputs=len(viewable))
        self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        kernel = self.model.get_layer("conv1").kernel
        with self.writer.as_default():
            tf.summary.image("conv1_filters", filter_grid(kernel.numpy()), step=epoch)
        self.writer.flush()




class AtomicWeights(keras.callbacks.Callback):
    """Saves the model's weights at each epoch end, or only on a new best `monitor` value.

    The file is written beside its destination and renamed over it, so a kill
    mid-write leaves the previous file intact.
    """

    def __init__(self, filepath, monitor=None, best_so_far=None):
        super().__init__()
        self.filepath = pathlib.Path(filepath)
        self.monitor = monitor
        self.best = math.inf if best_so_far is None else best_so_far

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or not value < self.best:
                return
            self.best = float(value)
        save_weights_atomically(self.model, self.filepath)


def save_weights_atomically(model, path):
    """Writes the model's weights, without the optimizer's state, through a temporary file.

    `model.save_weights` also stores the optimizer's variables (as large as
    the weights again for momentum SGD: 467 MB instead of 233 MB for the
    10-class net at 224); best/latest checkpoints do not need them, the
    resume state keeps them. Keras's saving library can skip them; its
    public `save_weights` is the fallback should that internal API change.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    try:
        from keras.src.saving import saving_lib

        saving_lib.save_weights_only(model, str(tmp), objects_to_skip=[model.optimizer])
    except (ImportError, TypeError):
        model.save_weights(tmp, overwrite=True)
    os.replace(tmp, path)


class ResumableState(keras.callbacks.Callback):
    """Writes the state an unfinished run resumes from, atomically, at every epoch end.

    `restore(model)` (before `fit`) loads the newest complete state and returns
    it; pass its epoch to `fit(initial_epoch=...)`.
    """

    def __init__(self, directory, best_checkpoint=None, monitor=None, completed_values=(), keep=2):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.best_checkpoint = best_checkpoint
        self.monitor = monitor
        self.monitor_values = [float(v) for v in completed_values]
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None and (logs or {}).get(self.monitor) is not None:
            self.monitor_values.append(float(logs[self.monitor]))
        final = self.directory / f"epoch-{epoch + 1:04d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.model.save_weights(partial / "state.weights.h5")
        best = self.best_checkpoint.best if self.best_checkpoint is not None else None
        meta = {
            "epoch": epoch + 1,
            "best": None if best in (None, math.inf) else best,
            "monitor_values": self.monitor_values,  # for the learning-rate schedule's replay
        }
        (partial / "meta.json").write_text(json.dumps(meta) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in self.complete_states(self.directory)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def complete_states(directory):
        directory = pathlib.Path(directory)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("epoch-[0-9][0-9][0-9][0-9]") if (p / "meta.json").is_file())

    @classmethod
    def restore(cls, model, directory):
        """Loads the newest complete state into `model` (built and compiled); returns its meta or None."""
        states = cls.complete_states(directory)
        for state in reversed(states):
            try:
                meta = json.loads((state / "meta.json").read_text())
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(state / "state.weights.h5")
                return meta
            except (OSError, ValueError) as error:  # an unreadable state: fall back to the one before
                print(f"Skipping unreadable resume state {state}: {error}", flush=True)
        return None


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose patience counter and best value survive a resumption.

    The learning rate itself is optimizer state, restored with the weights.
    The counters, which Keras resets when `fit` starts, are rebuilt in
    `on_train_begin` by replaying the monitored values of the epochs already
    done (`completed_values`) through Keras's own rule.
    """

    def __init__(self, *args, initial_learning_rate, completed_values=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_learning_rate = float(initial_learning_rate)
        self.completed_values = [float(v) for v in completed_values]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        learning_rate = self.initial_learning_rate
        for current in self.completed_values:
            if self.in_cooldown():
                self.cooldown_counter -= 1
                self.wait = 0
            if bool(self._is_improvement(current, self.best)):
                self.best = current
                self.wait = 0
            elif not self.in_cooldown():
                self.wait += 1
                if self.wait >= self.patience and learning_rate > np.float32(self.min_lr):
                    learning_rate = max(learning_rate * self.factor, self.min_lr)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, keeping the last good state."""

    def __init__(self, state_directory):
        super().__init__()
        self.state_directory = pathlib.Path(state_directory)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            states = ResumableState.complete_states(self.state_directory)
            kept = f"the last good state (epoch {int(states[-1].name[6:])})" if states else "no completed epoch"
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

    def __init__(self, state_directory):
        super().__init__()
        self.state_directory = pathlib.Path(state_directory)
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
        states = ResumableState.complete_states(self.state_directory)
        resume = f"epoch {int(states[-1].name[6:]) + 1}" if states else "the start"
        raise TrainingInterrupted(
            self.received,
            f"stopped by {signal.Signals(self.received).name}; run the same command again to resume from {resume}.",
        )

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()
