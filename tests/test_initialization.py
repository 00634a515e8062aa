"""LieGroupVAE starts as the paper code's LieCeleb does, layer by layer.

The paper code calls `xavier_uniform_` on every Linear / Conv2d / ConvTranspose2d weight of its
encoder, heads, `post_exp` and `fake_exp`, leaves every bias at PyTorch's default
U(+-1/sqrt(fan_in)), and draws each Lie algebra basis matrix from N(0, lie_alg_init_scale). The
expected bound of each tensor is computed here by PyTorch itself (`_calculate_fan_in_and_fan_out`,
which `xavier_uniform_` and the layers' `reset_parameters` use) from the shape the tensor has in the
paper code's state_dict; the Keras layer of each state_dict key comes from the importer's layout.
"""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from lievae_tf import models
from lievae_tf.interop import torch_import
from lievae_tf.keras2 import keras

import conftest  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason=conftest.TORCH_MISSING)

KS_P_VALUE = 1e-3  # the draws are seeded: no flakiness, only a margin against a wrong rule

CONFIGS = {
    "dsprites": dict(num_channels=1, subgroup_sizes=[100], subspace_sizes=[10], no_exp=False),
    "two_subgroups_no_exp": dict(num_channels=3, subgroup_sizes=[100, 64], subspace_sizes=[6, 4],
                                 no_exp=True),
}


def _model(config, **overrides):
  keras.utils.set_random_seed(0)
  return models.LieGroupVAE(**config, **overrides).build_variables(
      [64, 64, config["num_channels"]])


def _pytorch_fans(torch_weight_shape):
  return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_weight_shape))  # pylint: disable=protected-access


def _check_uniform(values, bound, name):
  values = np.ravel(values)
  assert np.abs(values).max() <= bound, f"{name}: outside +-{bound}"
  if values.size >= 20:  # the draws reach close to the bound (else the rule's bound is too wide)
    assert np.abs(values).max() >= bound * (1 - 10 / values.size), f"{name}: narrower than +-{bound}"
  p_value = scipy.stats.kstest(values, "uniform", args=(-bound, 2 * bound)).pvalue
  assert p_value > KS_P_VALUE, f"{name}: not U(+-{bound:.4g}) (KS p = {p_value:.2g})"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_layer_starts_as_pytorch_initialises_the_paper_codes(name):
  config = CONFIGS[name]
  vae = _model(config)
  layout = torch_import.torch_layout(dict(config, num_channels=config["num_channels"]))
  checked = set()
  for torch_key, path, _, torch_weight_shape in layout:
    layer = torch_import.keras_layer(vae, path)
    checked.add(id(layer))
    fan_in, fan_out = _pytorch_fans(torch_weight_shape)
    _check_uniform(layer.kernel.numpy(), math.sqrt(6.0 / (fan_in + fan_out)),
                   f"{torch_key}.weight (xavier_uniform_)")
    _check_uniform(layer.bias.numpy(), 1.0 / math.sqrt(fan_in),
                   f"{torch_key}.bias (PyTorch's default)")
  # Every layer with weights was checked.
  with_kernels = [layer for layer in vae.submodules if hasattr(layer, "kernel")]
  assert {id(layer) for layer in with_kernels} == checked
  scale = vae.lie_alg_init_scale
  for basis in vae.exp_map.bases:
    p_value = scipy.stats.kstest(basis.numpy().ravel(), "norm", args=(0.0, scale)).pvalue
    assert p_value > KS_P_VALUE, f"{basis.name}: not N(0, {scale})"


def test_the_conv_transpose_bias_bound_is_pytorchs_quirk():
  """ConvTranspose2d(64 -> 32) takes its fan-in from its 32 output channels: bound 1/sqrt(512),
  wider than the 1/sqrt(1024) its input channels would give. deconv_2's 32 biases reach past it."""
  vae = _model(CONFIGS["dsprites"])
  biases = vae.decoder.net.get_layer("deconv_2").bias.numpy()
  assert 1 / math.sqrt(64 * 16) < np.abs(biases).max() <= 1 / math.sqrt(32 * 16)


def test_zero_biases_on_request_and_for_the_beta_vae_baseline():
  vae = _model(CONFIGS["dsprites"], bias_init="zeros")
  beta_vae = models.BetaVAE(num_channels=1, num_latents=10)
  beta_vae.build_variables([64, 64, 1])
  for model in (vae, beta_vae):
    layers = [layer for layer in model.submodules if hasattr(layer, "bias")]
    assert layers and all(not np.any(layer.bias.numpy()) for layer in layers)
