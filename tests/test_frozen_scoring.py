"""Scoring through the module with its weights frozen to constants (`lievae_tf.dlib.frozen_scoring`):
its outputs equal the stock `tensorflow_hub.eval_function_for_module`'s for every signature, the stock
`dlib_evaluate` really scores through it (the `.pth` hook), and MIG and FactorVAE scores agree with
the stock path's to 1e-4."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import conftest
from lievae_tf.dlib import frozen_scoring
from lievae_tf.dlib import shims
from lievae_tf.evaluation import registry
from lievae_tf.pipeline import scoring


@pytest.fixture(scope="module")
def representation_dir(trained_model_dir, tmp_path_factory):
  """The stock `dlib_postprocess` (mean) of the shared trained model."""
  output_dir = str(tmp_path_factory.mktemp("frozen_scoring") / "postprocessed" / "mean")
  result = conftest.command(
      "dlib_postprocess", f"--model_dir={trained_model_dir}", f"--output_dir={output_dir}",
      f"--gin_config={os.path.join(registry.dlib_config_dir(), 'postprocess_configs', 'mean.gin')}")
  assert result.returncode == 0, result.stderr[-3000:]
  return output_dir


def _inputs(spec, signature, tags, rng):
  """Inputs of every dense input of `signature`: binary images, or Gaussian latent vectors."""
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  inputs = {}
  for name, info in hub.load_module_spec(spec).get_input_info_dict(signature, tags).items():
    shape = [5] + info.get_shape().as_list()[1:]
    values = rng.uniform(size=shape) < 0.1 if name == "images" else rng.normal(size=shape)
    inputs[name] = values.astype(info.dtype.as_numpy_dtype)
  return inputs


@pytest.mark.parametrize("module,tags", [("postprocessed", None), ("exported", None),
                                         ("exported", {"train"})])
def test_frozen_outputs_equal_the_stock_function_for_every_signature(
    module, tags, trained_model_dir, representation_dir):
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  spec = os.path.join(representation_dir if module == "postprocessed" else trained_model_dir,
                      "tfhub")
  signatures = hub.load_module_spec(spec).get_signature_names(tags)
  assert set(signatures) == ({"representation"} if module == "postprocessed" else
                             {"gaussian_encoder", "reconstructions", "decoder"})
  rng = np.random.RandomState(0)
  with hub.eval_function_for_module(spec, tags=tags) as stock, \
      frozen_scoring.eval_function_for_module(spec, tags=tags) as frozen:
    for signature in signatures:
      inputs = _inputs(spec, signature, tags, rng)
      stock_outputs = stock(inputs, signature=signature, as_dict=True)
      frozen_outputs = frozen(inputs, signature=signature, as_dict=True)
      assert set(frozen_outputs) == set(stock_outputs), signature
      for key, stock_value in stock_outputs.items():
        assert frozen_outputs[key].shape == stock_value.shape, (signature, key)
        assert np.all(np.isfinite(frozen_outputs[key])), (signature, key)
        if signature == "reconstructions":  # decodes a random sample: it must stay random
          again = frozen(inputs, signature=signature, as_dict=True)[key]
          assert not np.array_equal(again, frozen_outputs[key])
        else:
          np.testing.assert_allclose(frozen_outputs[key], stock_value, rtol=1e-5, atol=1e-5,
                                     err_msg=f"{signature}/{key}")
    if module == "postprocessed":  # without as_dict: the "default" output, as dlib reads it
      inputs = _inputs(spec, "representation", tags, rng)
      np.testing.assert_allclose(frozen(inputs, signature="representation"),
                                 stock(inputs, signature="representation"), rtol=1e-5, atol=1e-5)


def _standard_normal(graph, scope=""):
  """The output of the one random op of a module's graph (below `scope`): the reconstructions'
  noise."""
  ops = [op for op in graph.get_operations()
         if op.type == "RandomStandardNormal" and op.name.startswith(scope)]
  assert len(ops) == 1, [op.name for op in ops]
  return ops[0].outputs[0]


@pytest.mark.parametrize("tags", [None, {"train"}])
def test_frozen_reconstructions_equal_the_stock_modules_for_the_same_noise(tags, trained_model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  from lievae_tf.dlib import tf1_hub  # pylint: disable=g-import-not-at-top
  spec = os.path.join(trained_model_dir, "tfhub")
  rng = np.random.RandomState(1)
  images = _inputs(spec, "reconstructions", tags, rng)["images"]
  # The noise is drawn inside both graphs: each run is fed the same draw in place of it.
  num_latents = hub.load_module_spec(spec).get_output_info_dict(
      "gaussian_encoder", tags)["mean"].get_shape()[1]
  # Scaled so that the shared model's decoder depends on it well above rounding: its Lie algebra
  # basis is still at its initial scale 1e-3, so standard noise moves gG (and the output) ~1e-5.
  noise = 300 * rng.normal(size=[len(images), num_latents]).astype(np.float32)
  with tf.Graph().as_default() as graph:  # the stock TF-Hub path, as dlib reads a module
    module = hub.Module(spec, tags=tags)
    placeholder = tf.compat.v1.placeholder(tf.float32, images.shape)
    stock_output = module(placeholder, signature="reconstructions", as_dict=True)["images"]
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      # hub.Module builds the module once under "module/", and the call again: the call's noise.
      noise_op = _standard_normal(graph, "module_apply_reconstructions")
      stock = session.run(stock_output, {placeholder: images, noise_op: noise})
  with tf1_hub.loaded_module(spec, tags, freeze=True) as (graph, session, signatures):
    assert not [op for op in graph.get_operations()
                if op.type in ("VariableV2", "VarHandleOp")]  # frozen: no weight is read
    outputs = signatures["reconstructions"]
    fetch = graph.get_tensor_by_name(outputs.outputs["images"].name)
    feed = graph.get_tensor_by_name(outputs.inputs["images"].name)
    frozen = session.run(fetch, {feed: images, _standard_normal(graph): noise})
    other_noise = session.run(fetch, {feed: images, _standard_normal(graph): -noise})
  assert stock.shape == frozen.shape == images.shape
  assert np.abs(other_noise - frozen).max() > 1e-2  # the fed noise is what is decoded
  np.testing.assert_allclose(frozen, stock, rtol=1e-5, atol=1e-5)


def test_dlib_evaluate_scores_through_the_frozen_module_in_every_process():
  """What the `.pth` hook gives a fresh process of the environment that imports dlib's evaluate
  (the stock `dlib_evaluate`), with and without the speed-ups' switch; the metric suite's
  one-module-per-path wrapper goes on top (it applies the speed-ups itself, switch or not)."""
  probe = (
      "import json, tensorflow_hub\n"
      "from disentanglement_lib.evaluation import evaluate\n"
      "from lievae_tf.dlib import frozen_scoring, shared_loads, speedups\n"
      "hub = evaluate.hub\n"
      "speedups.use_frozen_scoring(evaluate)  # again: must not wrap twice\n"
      "with shared_loads.shared_loads():  # the metric suite's one-module-per-path wrapper\n"
      "  suite_hub = evaluate.hub._hub\n"
      "print(json.dumps({\n"
      "  'frozen': hub.eval_function_for_module is"
      " frozen_scoring.HubForScoring.eval_function_for_module,\n"
      "  'wraps_tensorflow_hub': getattr(hub, '_hub', None) is tensorflow_hub,\n"
      "  'forwards': hub.Module is tensorflow_hub.Module,\n"
      "  'idempotent': evaluate.hub is hub,\n"
      "  'suite_on_top': suite_hub is hub,\n"
      "  'tensorflow_hub_stock': tensorflow_hub.eval_function_for_module.__module__ in"
      " ('tensorflow_hub.module', 'lievae_tf.dlib.tf1_hub')}))\n")
  found = {}
  for switch in ("1", "0"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **{shims.SPEEDUPS_SWITCH: switch})
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found[switch] = json.loads(result.stdout.strip().splitlines()[-1])
  assert found["1"] == dict(frozen=True, wraps_tensorflow_hub=True, forwards=True,
                            idempotent=True, suite_on_top=True, tensorflow_hub_stock=True)
  # Switched off: dlib's evaluate keeps tensorflow_hub itself, until the suite (our command)
  # chooses the frozen path explicitly.
  assert found["0"] == dict(frozen=False, wraps_tensorflow_hub=False, forwards=True,
                            idempotent=False, suite_on_top=False, tensorflow_hub_stock=True)


# The registry's small sizes; FactorVAE smaller still (it encodes 64 images per training point).
_BINDINGS = {
    "mig": registry.get("mig").small_bindings,
    "factor_vae": ("factor_vae_score.num_variance_estimate = 1000",
                   "factor_vae_score.num_train = 200", "factor_vae_score.num_eval = 100"),
}


@pytest.mark.parametrize("metric", sorted(_BINDINGS))
def test_stock_dlib_evaluate_scores_equal_the_stock_hub_path(metric, representation_dir,
                                                             tmp_path):
  scores = {}
  for switch in ("1", "0"):  # frozen (the default), then stock tensorflow_hub
    output_dir = str(tmp_path / switch)
    env = dict(os.environ, **{shims.SPEEDUPS_SWITCH: switch})
    stock_command = scoring.evaluate_command(representation_dir, output_dir,
                                             registry.get(metric), _BINDINGS[metric])
    assert os.path.basename(stock_command[0]) == "dlib_evaluate"
    result = conftest.command("dlib_evaluate", *stock_command[1:], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # The evaluation log says which path scored.
    assert (frozen_scoring.FROZEN_LOG_MARK in result.stderr) == (switch == "1"), result.stderr[-3000:]
    with open(os.path.join(output_dir, "results", "json", "evaluation_results.json")) as f:
      scores[switch] = {k: v for k, v in json.load(f).items()
                        if k not in ("elapsed_time", "uuid")}
  assert set(scores["1"]) == set(scores["0"])
  assert registry.get(metric).score_key in scores["1"]
  for key, stock_value in scores["0"].items():
    assert scores["1"][key] == pytest.approx(stock_value, abs=1e-4), key
