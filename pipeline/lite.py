"""A Keras model run by TensorFlow Lite's CPU kernels (XNNPACK), for reading only.

The converted network is the same function as the Keras one (the same weights, float32
arithmetic; only the kernels' order of additions differs). What it saves is in
``glyph_cnn.build_glyph_cnn`` (CPU a crop, ad-hoc) and ``bench/reading_forms.py``, which measures
both engines' wall time on every training image and counts the readings that differ (none).
The network is converted when a bundle is loaded, from the weights whose sha256 the manifest
vouches for (the converter passes through a SavedModel in a temporary folder), so a bundle holds
no second copy of them that could drift.

TensorFlow marks ``tf.lite.Interpreter`` as deprecated in favour of a separate package; where a
TensorFlow install no longer has it, :func:`available` says so and readers fall back to Keras.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

#: Reading engines of the glyph CNN: ``auto`` is ``lite`` where TensorFlow has it (float32
#: only), else ``keras``.
ENGINES = ("auto", "keras", "lite")


def _interpreter_class() -> Any:
    """(``tf.lite.Interpreter``, ``tf.lite.TFLiteConverter``), or None where this TensorFlow has
    no TensorFlow Lite."""
    try:
        import tensorflow as tf

        lite = tf.lite
        return lite.Interpreter, lite.TFLiteConverter
    except (ImportError, AttributeError):
        return None


def available() -> bool:
    """Whether this TensorFlow can convert and run a model with TensorFlow Lite."""
    return _interpreter_class() is not None


class LiteNetwork:
    """``model`` converted to TensorFlow Lite; :meth:`predict_on_batch` as Keras' (float32 in,
    float32 out), with the batch size free from call to call.

    Raises:
        RuntimeError: this TensorFlow has no TensorFlow Lite, or the conversion failed.
    """

    def __init__(self, model: keras.Model, *, threads: int = 2) -> None:
        classes = _interpreter_class()
        if classes is None:
            raise RuntimeError("this TensorFlow install has no TensorFlow Lite (tf.lite)")
        interpreter_class, converter_class = classes
        # The converter exports a SavedModel to a temporary folder and prints where; TensorFlow
        # warns that tf.lite is deprecated. Neither is news for a user reading CAPTCHAs.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                flat = converter_class.from_keras_model(model).convert()
                self._interpreter = interpreter_class(model_content=flat, num_threads=threads)
            except Exception as exc:  # the converter raises many types; all mean "no lite form"
                raise RuntimeError(f"TensorFlow Lite conversion failed: {exc}") from exc
        self.input_shape = tuple(model.input_shape)
        self.threads = threads
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = -1

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) != self._batch:  # re-planning for a new batch size costs ~0.1 ms
            self._interpreter.resize_tensor_input(self._input, list(x.shape))
            self._interpreter.allocate_tensors()
            self._batch = len(x)
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)  # a copy, not a view of the arena
