"""A local stand-in for the TF-Hub MobileNetV2 (alpha 0.35, 224) classifier.

There is no internet here, so ``hub.load`` of the tfhub.dev URL cannot work.
The stand-in has the same interface as that module — called with float32
images ``[None, 224, 224, 3]`` in [0, 1], it returns ``[None, 1001]`` logits —
and is a real MobileNetV2 with fixed-seed random weights. Its labels are
meaningless; loading, calling and saving it are real.

Like a downloaded TF-Hub module it lives in a cache shared by every run:
``$TFHUB_CACHE_DIR`` if set, else ``~/.cache/tfx-servables/hub``. It is built
once (about 8 s) under a file lock and published with an atomic rename. The
build runs in a child process: it seeds TensorFlow's global RNG, and that state
must not leak into the exporting process (it would change the graphs, and so
the fingerprints, of servables that use random ops).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

STANDIN_PREFIX = "standin:"
# Bump when the builder changes, so that caches built by older code are not reused.
_BUILDER_VERSION = "1"
_KNOWN = ("mobilenet_v2_035_224",)


def cache_dir() -> str:
    """The shared hub module cache directory."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tfx-servables", "hub")


def resolve_handle(handle: str) -> str:
    """Maps ``standin:NAME`` to a local SavedModel path; other handles pass through."""
    if not handle.startswith(STANDIN_PREFIX):
        return handle
    name = handle[len(STANDIN_PREFIX):]
    if name not in _KNOWN:
        raise ValueError(f"unknown stand-in hub module {handle!r} (valid: "
                         f"{', '.join(STANDIN_PREFIX + k for k in _KNOWN)})")
    return ensure_standin(name)


def ensure_standin(name: str = "mobilenet_v2_035_224") -> str:
    """Returns the path of the stand-in module, building it on first use."""
    root = cache_dir()
    target = os.path.join(root, f"standin-{name}-v{_BUILDER_VERSION}")
    if os.path.isfile(os.path.join(target, "saved_model.pb")):
        return target
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(target, "saved_model.pb")):
            staging = tempfile.mkdtemp(prefix=f".build-{name}-", dir=root)
            try:
                subprocess.run(
                    [sys.executable, "-c", "import sys; from servables.hub_standin import "
                     "_build_mobilenet_v2_035_224 as b; b(sys.argv[1])", staging],
                    check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                os.rename(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _build_mobilenet_v2_035_224(path: str) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    network = tf.keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=0.35, weights=None, classes=1001,
        classifier_activation=None)

    class Classifier(tf.Module):
        def __init__(self, keras_model):
            super().__init__()
            self.network = keras_model

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            # TF-Hub image modules take [0, 1] inputs; Keras MobileNetV2 wants [-1, 1].
            return self.network(images * 2.0 - 1.0, training=False)

    tf.saved_model.save(Classifier(network), path)
