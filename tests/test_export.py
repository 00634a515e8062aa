"""The exported TF-Hub module: dlib's signatures in both graph variants equal the Keras model,
and it loads with hub.Module (TF1, with gradients), hub.load and hub.KerasLayer."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from lievae_tf.interop import export
from lievae_tf import models
from lievae_tf.keras2 import keras

tf1 = tf.compat.v1


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(Keras model, module path, test images, test latents) for a random 3-channel model."""
  keras.utils.set_random_seed(5)
  vae = models.LieGroupVAE(num_channels=3, subgroup_sizes=[16, 9], subspace_sizes=[3, 2],
                              lie_alg_init_scale=0.2)
  vae.build_variables([64, 64, 3])
  # Pin the log-variance far below zero so that the `reconstructions` signature's sample is
  # the mean to float precision and can be compared exactly.
  for head in vae.encoder.to_logvars:
    head.layers[-1].bias.assign(tf.fill(head.layers[-1].bias.shape, -40.0))
  path = str(tmp_path_factory.mktemp("export") / "tfhub")
  export.export_tfhub(vae, [64, 64, 3], path)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(4, 64, 64, 3)).astype(np.float32)
  latents = rng.normal(size=(4, 5)).astype(np.float32)
  return vae, path, images, latents


def _keras_outputs(vae, images, latents):
  _, mean, logvar = vae.encode(images)
  return dict(mean=mean.numpy(), logvar=logvar.numpy(),
              reconstructions=vae.decode_latents(mean).numpy(),
              decoder=vae.decode_latents(latents).numpy())


def test_layout_and_atomic_write(exported):
  _, path, _, _ = exported
  assert sorted(os.listdir(path)) == ["assets", "saved_model.pb", "tfhub_module.pb", "variables"]
  assert not [e for e in os.listdir(os.path.dirname(path)) if ".partial-" in e]


@pytest.mark.parametrize("tags", [None, {"train"}])
def test_signatures_equal_the_keras_model_in_both_graph_variants(exported, tags):
  vae, path, images, latents = exported
  expected = _keras_outputs(vae, images, latents)
  with tf.Graph().as_default():
    module = hub.Module(path, tags=tags)
    assert sorted(module.get_signature_names()) == [
        "decoder", "default", "gaussian_encoder", "reconstructions"] or sorted(
            module.get_signature_names()) == ["decoder", "gaussian_encoder", "reconstructions"]
    encoded = module(dict(images=images), signature="gaussian_encoder", as_dict=True)
    reconstructed = module(dict(images=images), signature="reconstructions", as_dict=True)
    decoded = module(dict(latent_vectors=latents), signature="decoder", as_dict=True)
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      got = session.run(dict(mean=encoded["mean"], logvar=encoded["logvar"],
                             reconstructions=reconstructed["images"], decoder=decoded["images"]))
  for name, value in expected.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_signature_shapes_are_dlibs(exported):
  _, path, _, _ = exported
  with tf.Graph().as_default():
    module = hub.Module(path)
    inputs = module.get_input_info_dict("gaussian_encoder")
    outputs = module.get_output_info_dict("gaussian_encoder")
    assert inputs["images"].get_shape().as_list() == [None, 64, 64, 3]
    assert outputs["mean"].get_shape().as_list() == [None, 5]
    assert module.get_input_info_dict("decoder")["latent_vectors"].get_shape().as_list() == [
        None, 5]
    assert module.get_output_info_dict("reconstructions")["images"].get_shape().as_list() == [
        None, 64, 64, 3]


def test_hub_module_in_a_tf1_graph_has_gradients(exported):
  _, path, images, _ = exported
  with tf.Graph().as_default():
    module = hub.Module(path, trainable=True, tags={"train"})
    placeholder = tf1.placeholder(tf.float32, [None, 64, 64, 3])
    mean = module(dict(images=placeholder), signature="gaussian_encoder", as_dict=True)["mean"]
    gradients = tf.gradients(tf.reduce_sum(mean), [placeholder] + module.variables)
    # The mean depends on the 4 convs, 2 dense layers and 2 mean heads of 2 layers each.
    assert sum(g is not None for g in gradients[1:]) == 2 * (4 + 2 + 2 * 2)
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      image_gradient = session.run(gradients[0], {placeholder: images})
  assert np.all(np.isfinite(image_gradient)) and np.any(image_gradient != 0)


def test_hub_load_and_keras_layer(exported):
  vae, path, images, latents = exported
  expected = _keras_outputs(vae, images, latents)
  loaded = hub.load(path, tags=[])
  got = loaded.signatures["gaussian_encoder"](images=tf.constant(images))
  np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-5, atol=1e-5)
  decoded = loaded.signatures["decoder"](latent_vectors=tf.constant(latents))
  np.testing.assert_allclose(decoded["images"], expected["decoder"], rtol=1e-5, atol=1e-5)

  inputs = keras.Input([64, 64, 3])
  encoder = hub.KerasLayer(path, signature="gaussian_encoder", signature_outputs_as_dict=True)
  keras_model = keras.Model(inputs, encoder(inputs)["mean"])
  np.testing.assert_allclose(keras_model(images), expected["mean"], rtol=1e-5, atol=1e-5)
