"""lievae_tf.dlib.tf1_hub: TF1 Hub modules written and read with TF's SavedModel tools, on either
stack, as disentanglement_lib uses them (apply a signature, add a transform, export again), and
interchangeable with tensorflow-hub 0.15's where that is installed (the pinned stack)."""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lievae_tf.dlib import tf1_hub

tf1 = tf.compat.v1
HUB_HAS_TF1_API = int(importlib.metadata.version("tensorflow-hub").split(".")[1]) < 16
RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 3)).astype(np.float32)
W = RNG.normal(size=(3, 2)).astype(np.float32)
B = RNG.normal(size=(2,)).astype(np.float32)


def _affine_module_fn():
  """y = x W + b, and z = sum of y's squares per row; W and b are variables."""
  x = tf1.placeholder(tf.float32, [None, 3], name="x")
  w = tf1.get_variable("layer/w", initializer=W)
  b = tf1.get_variable("layer/b", initializer=B)
  y = tf.matmul(x, w) + b
  tf1_hub.add_signature("affine", inputs={"x": x}, outputs={"y": y})
  tf1_hub.add_signature(inputs=x, outputs=tf.reduce_sum(tf.square(y), axis=1))


def _expected_y(w=W, b=B):
  return X @ w + b


@pytest.fixture(scope="module")
def affine_module(tmp_path_factory):
  """A module directory written by `Module.export`, its variables changed before the export."""
  path = str(tmp_path_factory.mktemp("tf1_hub") / "affine")
  spec = tf1_hub.create_module_spec(_affine_module_fn, [(set(), {}), ({"train"}, {})])
  with tf.Graph().as_default():
    module = tf1_hub.Module(spec, trainable=True)
    assert sorted(module.variable_map) == ["layer/b", "layer/w"]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      session.run(module.variable_map["layer/b"].assign(2 * B))
      module.export(path, session)
  return path


def test_spec_export_takes_the_variables_from_a_checkpoint(tmp_path):
  """dlib's `export_as_tf_hub` exports a trained model by `spec.export(path, checkpoint_path=...)`:
  every tag set's graph, with the checkpoint's values (here stored under other names)."""
  checkpoint = str(tmp_path / "trained" / "model.ckpt")
  with tf.Graph().as_default():
    stored = {"trained/w": tf1.Variable(3 * W), "trained/b": tf1.Variable(-B)}
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      tf1.train.Saver(stored).save(session, checkpoint)
  spec = tf1_hub.create_module_spec(_affine_module_fn, [(set(), {}), ({"train"}, {})])
  path = str(tmp_path / "exported")
  spec.export(path, checkpoint_path=checkpoint,
              name_transform_fn=lambda name: name.replace("layer/", "trained/"))
  reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
  np.testing.assert_array_equal(reader.get_tensor("layer/w"), 3 * W)
  np.testing.assert_array_equal(reader.get_tensor("layer/b"), -B)
  # y's float32 sums: a few roundings of their terms' magnitudes.
  tolerance = 4 * np.finfo(np.float32).eps * np.max(np.abs(X) @ np.abs(3 * W) + np.abs(B))
  for tags in (None, {"train"}):
    with tf1_hub.eval_function_for_module(path, tags=tags) as f:
      np.testing.assert_allclose(f(dict(x=X), signature="affine", as_dict=True)["y"],
                                 _expected_y(3 * W, -B), rtol=0, atol=tolerance)
  with pytest.raises(ValueError, match="holds no variable 'layer/"):
    spec.export(str(tmp_path / "again"), checkpoint_path=checkpoint)  # names not mapped


def test_dlibs_own_convolute_hub_test_passes(tmp_path):
  """disentanglement_lib's own test of its TF-Hub code (`utils/convolute_hub_test.py`, run from the
  installed dlib): a module exported by `spec.export(..., checkpoint_path=...)`, a transform
  appended through `hub.Module`, exported again and evaluated. On the current stack that is all
  this module's, lent to tensorflow_hub by the shims; on the pinned stack, hub 0.15's own."""
  test_file = importlib.util.find_spec("disentanglement_lib.utils.convolute_hub_test").origin
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file], cwd=tmp_path,
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]


def test_eval_function_reads_every_signature_and_tag_set(affine_module):
  for tags in (None, {"train"}):
    with tf1_hub.eval_function_for_module(affine_module, tags=tags) as f:
      y = f(dict(x=X), signature="affine", as_dict=True)["y"]
      z = f(X)  # the default signature, single input and output
    np.testing.assert_allclose(y, _expected_y(b=2 * B), rtol=1e-6)
    np.testing.assert_allclose(z, np.sum(_expected_y(b=2 * B) ** 2, axis=1), rtol=1e-5)


def test_eval_function_with_frozen_weights_is_the_same_function(affine_module):
  with tf1_hub.eval_function_for_module(affine_module, freeze=True) as f:
    y = f(dict(x=X), signature="affine", as_dict=True)["y"]
  np.testing.assert_allclose(y, _expected_y(b=2 * B), rtol=1e-6)


def test_module_applied_in_a_graph_reads_its_checkpoint(affine_module):
  with tf.Graph().as_default():
    module = tf1_hub.Module(affine_module)
    assert not tf1.trainable_variables()  # trainable=False
    y = module(dict(x=tf.constant(X)), signature="affine", as_dict=True)["y"]
    y_again = module(dict(x=tf.constant(X)), signature="affine", as_dict=True)["y"]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      got, got_again = session.run([y, y_again])
  np.testing.assert_allclose(got, _expected_y(b=2 * B), rtol=1e-6)
  np.testing.assert_array_equal(got, got_again)


def test_a_module_built_on_a_module_exports_both_parts(affine_module, tmp_path):
  """What dlib's convolute_hub does: apply a module, add a transform with variables, export."""

  def module_fn():
    inner = tf1_hub.Module(affine_module)
    x = tf1.placeholder(tf.float32, [None, 3], name="x")
    y = inner(dict(x=x), signature="affine", as_dict=True)["y"]
    with tf1.variable_scope("transform"):
      scale = tf1.get_variable("scale", initializer=np.float32(3.0))
    tf1_hub.add_signature("scaled", inputs={"x": x}, outputs={"default": scale * y})

  path = str(tmp_path / "convoluted")
  with tf.Graph().as_default():
    module = tf1_hub.Module(tf1_hub.create_module_spec(module_fn), trainable=True)
    assert sorted(module.variable_map) == ["module/layer/b", "module/layer/w", "transform/scale"]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())  # the inner weights from its files
      module.export(path, session)
  with tf1_hub.eval_function_for_module(path) as f:
    got = f(dict(x=X), signature="scaled", as_dict=True)["default"]
  np.testing.assert_allclose(got, 3 * _expected_y(b=2 * B), rtol=1e-6)


def test_errors_name_the_problem(affine_module, tmp_path):
  with pytest.raises(ValueError, match="saved_model.pb does not exist"):
    tf1_hub.load_module_spec(str(tmp_path))
  with tf1_hub.eval_function_for_module(affine_module) as f:
    with pytest.raises(ValueError, match=r"no signature 'nope'; it has \['affine', 'default'\]"):
      f(X, signature="nope")
    with pytest.raises(TypeError, match=r"takes inputs \['x'\], got \['y'\]"):
      f(dict(y=X), signature="affine")
  with pytest.raises(ValueError, match="no graph for tags"):
    tf1_hub.load_module_spec(affine_module).meta_graph({"serve"})


@pytest.mark.skipif(not HUB_HAS_TF1_API, reason="tensorflow-hub >= 0.16 has no TF1 module API "
                    "(the current stack): nothing to be interchangeable with")
def test_interchangeable_with_tensorflow_hub_015(affine_module, tmp_path):
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  assert hub.Module is not tf1_hub.Module
  # Ours read by hub's Module, with gradients.
  with tf.Graph().as_default():
    module = hub.Module(affine_module, trainable=True)
    x = tf1.placeholder(tf.float32, [None, 3])
    y = module(dict(x=x), signature="affine", as_dict=True)["y"]
    gradient = tf.gradients(tf.reduce_sum(y), module.variable_map["layer/b"])[0]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      got, got_gradient = session.run([y, gradient], {x: X})
  np.testing.assert_allclose(got, _expected_y(b=2 * B), rtol=1e-6)
  np.testing.assert_allclose(got_gradient, [len(X)] * 2)
  # hub's written module read by ours.
  path = str(tmp_path / "by_hub")

  def hub_module_fn():
    x = tf1.placeholder(tf.float32, [None, 3], name="x")
    w = tf1.get_variable("layer/w", initializer=W)
    hub.add_signature("affine", inputs={"x": x}, outputs={"y": tf.matmul(x, w)})

  with tf.Graph().as_default():
    module = hub.Module(hub.create_module_spec(hub_module_fn))
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      module.export(path, session)
  with tf1_hub.eval_function_for_module(path) as f:
    np.testing.assert_allclose(f(dict(x=X), signature="affine", as_dict=True)["y"], X @ W,
                               rtol=1e-6)
