"""``tf.data`` input pipelines built from manifest items, with training-time augmentation.

Images are decoded by :func:`catdog.images.load_image` (the one decode path catdog uses
everywhere) and fed to models as float32 RGB in 0..255; each model preprocesses inside itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf
import keras

from catdog.data import Item, labels_of
from catdog.images import load_image

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation in the spirit of Keras' ImageDataGenerator (flip, rotation, zoom, shear, shift).

    Factors follow Keras' preprocessing layers: ``rotation`` is a fraction of a full turn
    (0.05 = ±18°), ``zoom``/``translation``/``shear`` fractions of the image size, ``contrast`` ±factor.
    A factor of 0 switches that transform off.
    """

    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.15
    translation: float = 0.1
    shear: float = 0.1
    contrast: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)

    def layers(self, seed: int | None = None) -> keras.Sequential:
        """The augmentation as a Keras model of random preprocessing layers (pixel range 0..255)."""
        steps: list[keras.layers.Layer] = []
        if self.flip:
            steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if self.rotation:
            steps.append(keras.layers.RandomRotation(self.rotation, fill_mode="reflect", seed=seed))
        if self.zoom:
            steps.append(keras.layers.RandomZoom(self.zoom, fill_mode="reflect", seed=seed))
        if self.translation:
            steps.append(keras.layers.RandomTranslation(self.translation, self.translation,
                                                        fill_mode="reflect", seed=seed))
        if self.shear:
            steps.append(keras.layers.RandomShear(self.shear, self.shear, fill_mode="reflect", seed=seed))
        if self.contrast:
            steps.append(keras.layers.RandomContrast(self.contrast, value_range=(0, 255), seed=seed))
        return keras.Sequential(steps, name="augmentation")


def _decoder(image_size: int):
    def decode(path: bytes) -> np.ndarray:
        return load_image(path.decode("utf-8"), image_size)

    def decode_tf(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return tf.cast(image, tf.float32)

    return decode_tf


def image_dataset(paths: Sequence[str], image_size: int, batch_size: int = 32) -> tf.data.Dataset:
    """Batches of images for ``paths`` in order (no labels, no shuffle): for prediction."""
    ds = tf.data.Dataset.from_tensor_slices(list(map(str, paths)))
    ds = ds.map(_decoder(image_size), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def make_dataset(items: Sequence[Item], image_size: int, batch_size: int = 32, *, training: bool = False,
                 augment: Augmentation | None = None, cache: bool = False, seed: int = 0) -> tf.data.Dataset:
    """``(image, label)`` batches for ``items``.

    ``training=True`` shuffles every epoch (seeded) and applies ``augment``; evaluation
    pipelines never shuffle, so predictions line up with ``items``. ``cache`` keeps decoded,
    resized images in memory after the first epoch (~150 KB per image at 224 px).
    """
    if not items:
        raise ValueError("no images to build a dataset from (empty split?)")
    labels = labels_of(items).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(([i.path for i in items], labels))
    if training:
        # Shuffle file names before decoding: cheap, and a full-size buffer gives a true shuffle.
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    decode = _decoder(image_size)
    # Always in order: with a seeded shuffle this makes the same seed give the same batches.
    ds = ds.map(lambda p, y: (decode(p), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.batch(batch_size)
    if training and augment is not None:
        aug = augment.layers(seed=seed)
        # Sequential on purpose: the random layers draw from a stateful seed generator, and
        # parallel calls would hand the draws to batches in thread order (irreproducible runs).
        ds = ds.map(lambda x, y: (aug(x, training=True), y))
    return ds.prefetch(AUTOTUNE)
