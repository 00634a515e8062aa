"""`lievae_import_torch` and `lievae_tf.torch_import`: the file formats it reads, what it refuses
(no code from the files runs), its errors, and the whole scoring pipeline on an imported
checkpoint with the real commands: `lievae_import_torch` -> stock `dlib_postprocess` ->
`dlib_evaluate` (MIG) -> `dlib_aggregate_results`."""

import argparse
import json
import os
import pickle
import re
import shlex
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from conftest import command
from lievae_tf.evaluation import registry
from lievae_tf.interop import torch_import
from lievae_tf.errors import UserError

import conftest  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason=conftest.TORCH_MISSING)
import torch_reference  # pylint: disable=g-import-not-at-top,g-bad-import-order (needs torch)

tf1 = tf.compat.v1


@pytest.fixture(scope="module")
def paper_model():
  torch.manual_seed(0)
  return torch_reference.LieGroupVAE([100], [10], nc=1, recons_loss_type="bce")


@pytest.fixture
def checkpoint(paper_model, tmp_path):
  """A fresh checkpoint directory in the paper code's format (the test may damage it)."""
  return torch_reference.save_checkpoint(paper_model, str(tmp_path / "log"), "dsprites")


def _import_error(checkpoint_dir):
  with pytest.raises(UserError) as error:
    torch_import.load_checkpoint(checkpoint_dir)
  return str(error.value)


class Exploit:
  """Unpickling this calls `open(path, 'w')`: a stand-in for arbitrary code."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


class ShellExploit(Exploit):
  """Unpickling this runs a shell command through `os.system`."""

  def __reduce__(self):
    return (os.system, (f"touch {shlex.quote(self.path)}",))


# args.pt formats.


def test_args_in_every_format_torch_save_writes(tmp_path):
  args = torch_reference.paper_args("shapes3d", subgroup_sizes_ls=[100, 64],
                                    subspace_sizes_ls=[6, 4], capacity=25.0, hy_rec=0.1)
  args.metrics_list = {"mig": 1, "dci": [0.5, None]}  # dicts, lists, None, as flags can hold
  args.pair, args.names = (1, 2.5), {"a", "b"}
  paths = {name: str(tmp_path / f"{name}.pt") for name in ("zip", "legacy")}
  torch.save(args, paths["zip"])
  torch.save(args, paths["legacy"], _use_new_zipfile_serialization=False)
  for name, path in paths.items():
    assert torch_import.read_args(path) == args, name


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the bare pickle
def test_args_not_written_by_torch_save_are_refused(tmp_path):
  path = str(tmp_path / "args.pt")
  with open(path, "wb") as f:
    pickle.dump(torch_reference.paper_args(), f)  # a bare pickle: torch.load reads none
  with pytest.raises(UserError, match="not an args.pt written by the paper code"):
    torch_import.read_args(path)


@pytest.mark.parametrize("exploit", [Exploit, ShellExploit], ids=["open", "os.system"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_args_with_code_is_refused_and_not_run(tmp_path, zip_format, exploit):
  marker = tmp_path / "ran"
  path = str(tmp_path / "args.pt")
  torch.save(argparse.Namespace(model="lie_group", payload=exploit(str(marker))), path,
             _use_new_zipfile_serialization=zip_format)
  function = exploit(str(marker)).__reduce__()[0]
  with pytest.raises(UserError, match=re.escape(
      f"refers to {function.__module__}.{function.__name__}; only argparse.Namespace")):
    torch_import.read_args(path)
  assert not marker.exists()


def test_args_with_a_tensor_is_refused(tmp_path):
  path = str(tmp_path / "args.pt")
  torch.save(argparse.Namespace(model="lie_group", x=torch.zeros(2)), path)
  with pytest.raises(UserError, match="only argparse.Namespace and plain builtins"):
    torch_import.read_args(path)


def test_model_with_code_is_refused_and_not_run(checkpoint, paper_model, tmp_path):
  marker = tmp_path / "ran"
  state = dict(paper_model.state_dict(), extra=Exploit(str(marker)))
  torch.save(state, os.path.join(checkpoint, "model.pt"))
  message = _import_error(checkpoint)
  assert "refused by torch.load(weights_only=True)" in message and "model.pt" in message
  assert not marker.exists()


def test_a_pickled_module_instead_of_a_state_dict_is_refused(checkpoint, paper_model):
  torch.save(paper_model, os.path.join(checkpoint, "model.pt"))
  assert "re-save a full pickled model as its state_dict" in _import_error(checkpoint)


# The weight mapping, by layer name.


def test_each_torch_parameter_goes_to_the_layer_of_its_name(checkpoint):
  vae, config = torch_import.load_checkpoint(checkpoint)
  layout = torch_import.torch_layout(config)
  layers = [torch_import.keras_layer(vae, path) for _, path, _, _ in layout]
  assert [layer.name for layer in layers] == [path.rsplit("/", 1)[1] for _, path, _, _ in layout]
  assert len({id(layer) for layer in layers}) == len(layout)
  # The layers the by-position mapping of before took (the Flatten and Reshape skipped).
  by_position = ([vae.encoder.group_features.layers[i] for i in (0, 1, 2, 3, 5, 6)] +
                 [head.layers[i] for pair in zip(vae.encoder.to_means, vae.encoder.to_logvars)
                  for head in pair for i in (0, 1)] +
                 [vae.decoder.net.layers[i] for i in (0, 1, 3, 4, 5, 6)])
  assert layers == by_position
  with pytest.raises(ValueError, match=r"0 layers named 'conv_9' in group_features.*'conv_1'"):
    torch_import.keras_layer(vae, "encoder/group_features/conv_9")


# Errors that name the problem.


def test_other_models_of_the_paper_code_are_unsupported(checkpoint):
  args = torch_import.read_args(os.path.join(checkpoint, "args.pt"))
  args.model = "beta_shapes"
  torch.save(args, os.path.join(checkpoint, "args.pt"))
  message = _import_error(checkpoint)
  assert "unsupported model 'beta_shapes'" in message and "--model=lie_group" in message


@pytest.mark.parametrize("missing", ["model.pt", "args.pt"])
def test_missing_files(checkpoint, missing):
  os.remove(os.path.join(checkpoint, missing))
  message = _import_error(checkpoint)
  assert f"has no {missing}" in message and checkpoint in message


def test_missing_directory(tmp_path):
  assert "does not exist" in _import_error(str(tmp_path / "nowhere"))


def test_version_directory_is_accepted(checkpoint):
  vae, config = torch_import.load_checkpoint(os.path.dirname(checkpoint))  # version_0
  assert config["subgroup_sizes"] == [100] and vae.num_latents == 10


def test_shape_mismatch_names_the_key_and_both_shapes(checkpoint):
  args = torch_import.read_args(os.path.join(checkpoint, "args.pt"))
  args.subgroup_sizes_ls = [64]  # the model was saved with [100]
  torch.save(args, os.path.join(checkpoint, "args.pt"))
  message = _import_error(checkpoint)
  assert "shape mismatch for encoder.prior_group.11.weight: checkpoint (100, 256), " \
         "expected (64, 256)" in message
  assert "decoder.lie_alg_basis_ls.0: checkpoint (1, 10, 10), expected (1, 8, 8)" in message


def test_unexpected_and_missing_keys_are_named(checkpoint, paper_model):
  state = paper_model.state_dict()
  torch.save(dict(state, **{"decoder.extra.weight": torch.zeros(3, 2)}),
             os.path.join(checkpoint, "model.pt"))
  assert "unexpected keys ['decoder.extra.weight (3, 2)']" in _import_error(checkpoint)
  del state["decoder.post_exp.11.bias"]
  torch.save(state, os.path.join(checkpoint, "model.pt"))
  assert "missing keys ['decoder.post_exp.11.bias']" in _import_error(checkpoint)


def test_command_prints_one_line_errors_and_refuses_a_finished_model_dir(checkpoint, tmp_path):
  args = torch_import.read_args(os.path.join(checkpoint, "args.pt"))
  bad = str(tmp_path / "bad")
  shutil.copytree(checkpoint, bad)
  args.model = "factor_vae"
  torch.save(args, os.path.join(bad, "args.pt"))
  result = command("lievae_import_torch", f"--checkpoint_dir={bad}",
                   f"--model_dir={tmp_path / 'out'}")
  assert result.returncode == 1
  assert "lievae_import_torch: error: unsupported model 'factor_vae'" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "out")  # nothing is written before the checks pass


def test_a_non_empty_model_dir_needs_overwrite(checkpoint, tmp_path):
  model_dir = tmp_path / "model"
  (model_dir / "tf_checkpoint").mkdir(parents=True)  # e.g. an unfinished lievae_train run
  with pytest.raises(UserError, match=r"is not empty \(tf_checkpoint\).*--overwrite"):
    torch_import.import_checkpoint(checkpoint, str(model_dir))
  assert os.listdir(model_dir) == ["tf_checkpoint"]
  torch_import.import_checkpoint(checkpoint, str(model_dir), overwrite=True)
  assert sorted(os.listdir(model_dir)) == ["results", "tfhub"]


# The whole pipeline.


def test_imported_checkpoint_is_scored_by_the_stock_dlib_commands(paper_model, tmp_path):
  root = tmp_path / "runs"
  checkpoint_dir = torch_reference.save_checkpoint(paper_model, str(tmp_path / "log"), "dsprites")
  model_dir = str(root / "paper_seed0")
  result = command("lievae_import_torch", f"--checkpoint_dir={checkpoint_dir}",
                   f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dataset.name = 'dsprites_full'" in result.stdout
  with open(os.path.join(model_dir, "results", "gin", "train.gin")) as f:
    operative = f.read()
  assert "dataset.name = 'dsprites_full'" in operative
  assert "LieGroupVAE.subgroup_sizes = [100]" in operative
  assert "LieGroupVAE.recons_loss_type = 'bce'" in operative

  again = command("lievae_import_torch", f"--checkpoint_dir={checkpoint_dir}",
                  f"--model_dir={model_dir}")
  assert again.returncode == 1 and "--overwrite" in again.stderr

  config_dir = registry.dlib_config_dir()
  representation = os.path.join(model_dir, "postprocessed", "mean")
  steps = [
      ("dlib_postprocess", f"--model_dir={model_dir}", f"--output_dir={representation}",
       f"--gin_config={config_dir}/postprocess_configs/mean.gin"),
      ("dlib_evaluate", f"--input_dir={representation}",
       f"--output_dir={model_dir}/metrics/mean/mig",
       f"--gin_config={config_dir}/metric_configs/mig.gin",
       "--gin_bindings=evaluation.name = 'mig'", "--gin_bindings=mig.num_train = 1000"),
      ("dlib_aggregate_results",
       f"--result_file_pattern={root}/*/metrics/*/*/results/aggregate/evaluation.json",
       f"--output_path={root}/results.json"),
  ]
  for step in steps:
    result = command(*step)
    assert result.returncode == 0, f"{step[0]}: {result.stderr[-3000:]}"

  with open(root / "results.json") as f:
    aggregated = json.load(f)
  (row,) = aggregated["evaluation_results.discrete_mig"]
  assert 0.0 <= aggregated["evaluation_results.discrete_mig"][row] <= 1.0
  assert aggregated["train_config.dataset.name"][row] == "'dsprites_full'"
  assert aggregated["train_config.LieGroupVAE.hy_hes"][row] == "40.0"
  assert aggregated["train_results.imported_from"][row] == checkpoint_dir

  # The representation dlib scored is the paper model's mu.
  images = (np.random.default_rng(0).uniform(size=(4, 64, 64, 1)) > 0.7).astype(np.float32)
  with torch.no_grad():
    _, mu, _ = paper_model.encoder(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  with tf.Graph().as_default():
    module = hub.Module(os.path.join(representation, "tfhub"))
    scored = module(dict(images=images), signature="representation", as_dict=True)["default"]
    with tf1.Session() as session:
      session.run(tf1.global_variables_initializer())
      scored = session.run(scored)
  np.testing.assert_allclose(scored, mu.numpy(), rtol=1e-5, atol=1e-5 * np.abs(mu.numpy()).max())
