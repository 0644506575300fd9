"""A Keras callback that stops training abruptly, for the resume tests."""

from __future__ import annotations

import keras


class Interrupt(keras.callbacks.Callback):
    """Stops training abruptly after a given epoch (as a kill would, once that epoch is backed up)."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt
