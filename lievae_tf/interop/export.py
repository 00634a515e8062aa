"""Export: the TF-Hub module and the results directory that disentanglement_lib reads.

The module has the signatures and the two graph variants of dlib's own `export_as_tf_hub`
(docs/environment.md): the same Keras model is built again inside a TF1 `module_fn`
(`lievae_tf.dlib.tf1_hub`, on either stack), and the module is written with the trained
weights as its variables' values. Every output directory is
written beside its final place and renamed into it, so an interrupted export leaves nothing that
looks finished.
"""

import contextlib
import os

import numpy as np
import tensorflow as tf

from lievae_tf import model_dir
from lievae_tf.dlib import tf1_hub
from lievae_tf.models import base

tf1 = tf.compat.v1


def _module_fn_for(model_class, config, image_shape, weights):
  """A TF1 `module_fn` building `model_class(**config)`; records its weights' names and shapes."""

  def module_fn(is_training):
    del is_training  # No dropout or batch norm: both graph variants are the same network.
    # float32 whatever precision the model trained in: dlib's signatures are float32.
    with _tf1_control_flow(), base.precision_policy("float32"):
      _build_signatures(model_class, config, image_shape, weights)

  return module_fn


@contextlib.contextmanager
def _tf1_control_flow():
  """Builds TF1 control flow (Switch/Merge, Enter/Exit) in the module's graph.

  With TF2's control flow, the `cond` inside `tf.linalg.expm` carries its gradient intermediates
  as optionals whose types differ between branches (int32 vs float); TF 2.15 then logs a 30-line
  "Type inference failed" warning in every process that loads the module (lievae_train's export,
  dlib_postprocess, dlib_evaluate), though the graph runs correctly. TF1 control flow has no such
  intermediates, and is what TF1 Hub modules were made for.
  """
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  enabled = control_flow_util.ENABLE_CONTROL_FLOW_V2
  control_flow_util.ENABLE_CONTROL_FLOW_V2 = False
  try:
    yield
  finally:
    control_flow_util.ENABLE_CONTROL_FLOW_V2 = enabled


def _build_signatures(model_class, config, image_shape, weights):
  """dlib's three signatures of `model_class(**config)`; records its weights' names and shapes."""
  vae = model_class(**config)
  images = tf1.placeholder(tf.float32, shape=[None] + list(image_shape), name="images")
  mean, logvar = vae.gaussian_encoder(images)
  tf1_hub.add_signature(name="gaussian_encoder", inputs={"images": images},
                        outputs={"mean": mean, "logvar": logvar})
  sample = base.reparameterise(mean, logvar, tf.random.normal(tf.shape(mean)))
  tf1_hub.add_signature(name="reconstructions", inputs={"images": images},
                        outputs={"images": vae.decode_latents(sample)})
  latents = tf1.placeholder(tf.float32, shape=[None, vae.num_latents], name="latent_vectors")
  tf1_hub.add_signature(name="decoder", inputs={"latent_vectors": latents},
                        outputs={"images": vae.decode_latents(latents)})
  weights[:] = [(w.name.split(":")[0], tuple(w.shape.as_list())) for w in vae.weights]


def export_tfhub(vae, image_shape, export_path):
  """Writes `vae` as a TF1 Hub module at `export_path` (atomically)."""
  weights = []
  config = vae.get_config()
  try:
    spec = tf1_hub.create_module_spec(
        _module_fn_for(type(vae), config, image_shape, weights),
        tags_and_args=[({"train"}, {"is_training": True}), (set(), {"is_training": False})])
  finally:
    # Keras switches a layer class's base to its TF1 version, for every instance, when the
    # class is instantiated in a graph (as `module_fn` does), which breaks the eager `vae`.
    # Instantiating the same classes eagerly switches them back.
    with base.precision_policy("float32"):
      type(vae)(**config)
  # weights: (name, shape) of the module graph's variables, in the order of `vae.weights`.
  # Trainable weights from the model; the rest (its loss trackers' accumulators) start at zero as
  # in a fresh graph: reading those, which sync on read, would be a collective under
  # multi-worker training, and the other workers may be gone by now.
  trained = [w.numpy() if w.trainable else np.zeros(w.shape, w.dtype.as_numpy_dtype)
             for w in vae.weights]
  if [shape for _, shape in weights] != [value.shape for value in trained]:
    raise ValueError(f"export: the module's variables {weights} do not match the trained "
                     f"weights {[value.shape for value in trained]}")
  tf1_hub.write_module(export_path, spec.meta_graphs(),
                       {name: value for (name, _), value in zip(weights, trained)})


def write_results(results_dir, results_dict, extra_files=None):
  """dlib's `update_result_directory(results_dir, "train", ...)`, atomically.

  It saves the operative gin config (which holds `dataset.name`) as `gin/train.gin`.
  `extra_files` ({relative path: bytes}, e.g. PNG images) are written into the same directory
  before it is renamed into place, so they appear together with the results or not at all.
  """
  from disentanglement_lib.utils import results  # pylint: disable=g-import-not-at-top
  with model_dir.atomic_directory(results_dir) as tmp:
    results.update_result_directory(tmp, "train", dict(results_dict))
    for relative_path, content in (extra_files or {}).items():
      path = os.path.join(tmp, relative_path)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(content)
