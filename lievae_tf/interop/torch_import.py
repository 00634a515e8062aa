"""Imports the paper code's PyTorch checkpoints into the Keras model and exports them for dlib.

The paper code (CommutativeLieGroupVAE-Pytorch) saves `<log_path>/version_N/checkpoints/`:
`model.pt`, the `state_dict` of its `LieCeleb`, and `args.pt`, the `argparse.Namespace` of its
flags. `load_checkpoint` maps every weight onto `LieGroupVAE`; `import_checkpoint` (the
`lievae_import_torch` command) also writes `model_dir/tfhub` and `model_dir/results` with the
code `lievae_train` exports with, so that the stock dlib commands score the imported model.

Loading runs no code from the files: both go through `torch.load(weights_only=True)`, `args.pt`
with `argparse.Namespace` as its one admitted class (`ARGS_SAFE_GLOBALS`).
"""

import argparse
import os
import pickle
import re
import time

import numpy as np

from lievae_tf import data
from lievae_tf import model_dir as model_dir_lib
from lievae_tf.errors import UserError

# The paper code's `--dataset` -> dlib's `dataset.name`.
DATASET_NAMES = {"dsprites": "dsprites_full", "shapes3d": "shapes3d"}
PAPER_MODEL = "lie_group"  # the paper code's `--model` of LieCeleb
# The paper code's defaults (its main.py), for fields an older args.pt may lack.
PAPER_DEFAULTS = dict(lie_alg_init_scale=0.001, hy_hes=40.0, hy_rec=0.1, hy_commute=0.0,
                      forward_eg_prob=0.2, recons_loss_type="l2", no_exp=False, beta=1.0,
                      capacity=None, capacity_leadin=100000)
IMAGE_SIZE = 64


# Reading the files.


def checkpoint_files(checkpoint_dir):
  """(model.pt, args.pt) in `checkpoint_dir`, or in its `checkpoints/` (a `version_N` dir)."""
  for directory in (checkpoint_dir, os.path.join(checkpoint_dir, "checkpoints")):
    paths = [os.path.join(directory, name) for name in ("model.pt", "args.pt")]
    if all(os.path.isfile(p) for p in paths):
      return paths
  if not os.path.isdir(checkpoint_dir):
    raise UserError(f"checkpoint directory {checkpoint_dir} does not exist. Give the paper "
                    "code's <log_path>/version_N/checkpoints directory.")
  missing = [name for name in ("model.pt", "args.pt")
             if not os.path.isfile(os.path.join(checkpoint_dir, name))]
  raise UserError(
      f"{checkpoint_dir} has no {' and no '.join(missing)}: a checkpoint of the paper code is a "
      "directory <log_path>/version_N/checkpoints holding model.pt (the state_dict) and args.pt "
      "(its argparse.Namespace); both are needed.")


# What args.pt may hold beyond the tensors and plain builtins torch.load(weights_only=True) admits
# anyway: the paper code torch.saves its argparse.Namespace of flags, nothing else.
ARGS_SAFE_GLOBALS = [argparse.Namespace]
_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray)
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("importing PyTorch checkpoints needs torch: pip install -e '.[torch]' "
                    "(the CPU build torch==2.13.0 is enough).") from None
  return torch


def _refusal(error):
  """What torch's weights-only unpickler refused, in a line (its message runs to many)."""
  text = str(error)
  global_name = re.search(r"GLOBAL ([\w.]+)", text)
  if global_name:
    return f"refers to {global_name.group(1)}"
  # Its reason follows the last "error:" (e.g. "Unsupported operand 149" of a bare pickle).
  lines = [line.strip() for line in text.rsplit("error:", 1)[-1].splitlines()]
  return f"holds what it cannot load safely ({next((l for l in lines if l), type(error).__name__)})"


def _not_plain(value, where):
  """Where in `value` something other than plain builtins is (e.g. "args.x: torch.Tensor")."""
  if type(value) in _PLAIN:
    return None
  if type(value) in _CONTAINERS:
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
      found = _not_plain(key, f"{where} key") or _not_plain(item, f"{where}[{key!r}]")
      if found:
        return found
    return None
  return f"{where}: {type(value).__module__}.{type(value).__qualname__}"


def read_args(path):
  """The `argparse.Namespace` in `path`, as `torch.save` writes it (zip or legacy format).

  Read by `torch.load(weights_only=True)`, which runs no code from the file, with
  `argparse.Namespace` its one admitted class; anything in it but plain builtins is refused.
  """
  torch = _torch()
  refused = ("; only argparse.Namespace and plain builtins are admitted, so that loading runs "
             "no code. It is not an args.pt written by the paper code (torch.save of its "
             "argparse Namespace): re-save the Namespace with plain values.")
  try:
    with torch.serialization.safe_globals(ARGS_SAFE_GLOBALS):
      args = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UserError(f"{path} {_refusal(e)}{refused}") from None
  except Exception as e:  # pylint: disable=broad-except (a corrupt file can fail in many ways)
    raise UserError(f"{path} is not a readable args.pt ({type(e).__name__}: {e}). It should be "
                    "the paper code's torch.save of its argparse Namespace.") from None
  if not isinstance(args, argparse.Namespace):
    raise UserError(f"{path} holds {type(args).__name__}, not the argparse.Namespace of the "
                    "paper code's flags.")
  found = _not_plain(vars(args), "args")
  if found:
    raise UserError(f"{path} holds {found}{refused}")
  return args


def read_state_dict(path):
  """{key: float32 numpy array} from `model.pt`, through torch's weights-only loader."""
  torch = _torch()
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UserError(
        f"{path} was refused by torch.load(weights_only=True), which runs no code from the file: "
        f"it {_refusal(e)}. The paper code saves model.state_dict() (tensors only) as model.pt; "
        "re-save a full pickled model as its state_dict.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{path} is not a readable model.pt ({type(e).__name__}: {e}).") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict (a mapping of "
                    "parameter names to tensors) as the paper code saves.")
  return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def _field(args, name, path):
  if hasattr(args, name):
    return getattr(args, name)
  if name in PAPER_DEFAULTS:
    return PAPER_DEFAULTS[name]
  raise UserError(f"{path} has no field {name!r}; the paper code's args.pt always has it. Is "
                  "this a checkpoint of CommutativeLieGroupVAE-Pytorch?")


def config_from_args(args, path="args.pt"):
  """(LieGroupVAE keyword arguments, dlib dataset name) from the paper code's Namespace."""
  model = _field(args, "model", path)
  if model != PAPER_MODEL:
    raise UserError(
        f"unsupported model {model!r} (args.model in {path}): lievae_import_torch imports the "
        f"paper code's Commutative Lie Group VAE (--model={PAPER_MODEL}, class LieCeleb) only. "
        "Its other models (beta_shapes, beta_celeb, factor_vae, dip_vae_i, ...) have other "
        "networks.")
  dataset = _field(args, "dataset", path)
  if dataset not in DATASET_NAMES:
    raise UserError(f"dataset {dataset!r} (args.dataset in {path}) has no disentanglement_lib "
                    f"counterpart here; known: {sorted(DATASET_NAMES)}.")
  num_channels = getattr(args, "nc", None) or data.PAPER_NUM_CHANNELS[dataset]
  config = dict(num_channels=int(num_channels),
                subgroup_sizes=[int(s) for s in _field(args, "subgroup_sizes_ls", path)],
                subspace_sizes=[int(s) for s in _field(args, "subspace_sizes_ls", path)])
  for name in ("lie_alg_init_scale", "hy_hes", "hy_rec", "hy_commute", "forward_eg_prob",
               "beta"):
    config[name] = float(_field(args, name, path))
  capacity = _field(args, "capacity", path)
  config.update(recons_loss_type=_field(args, "recons_loss_type", path),
                capacity=None if capacity is None else float(capacity),
                capacity_leadin=int(_field(args, "capacity_leadin", path)),
                no_exp=bool(_field(args, "no_exp", path)))
  return config, DATASET_NAMES[dataset]


# The weight mapping.


def _dense(w, b):
  """Linear (out, in) -> Dense kernel (in, out)."""
  return [w.T, b]


def _conv(w, b):
  """Conv2d (out, in, h, w) -> Conv2D HWIO. Both are cross-correlations: no flip."""
  return [w.transpose(2, 3, 1, 0), b]


def _deconv(w, b):
  """ConvTranspose2d (in, out, h, w) -> Conv2DTranspose (h, w, out, in), no spatial flip.

  Both are the adjoint of the same cross-correlation, and torch's padding 1 equals TF's 'same'
  here (checked numerically by tests/test_torch_parity.py).
  """
  return [w.transpose(2, 3, 1, 0), b]


def _dense_from_chw(w, b):
  """The encoder's Linear(1024, 256) after torch's flatten of (64, 4, 4) channels-first; Keras
  flattens (4, 4, 64): permute the kernel's input rows."""
  kernel = w.T.reshape(64, 4, 4, -1).transpose(1, 2, 0, 3).reshape(1024, -1)
  return [kernel, b]


def _dense_to_chw(w, b):
  """The decoder's Linear(256, 1024) before torch's view to (64, 4, 4); Keras reshapes to
  (4, 4, 64): permute the kernel's output columns and the bias."""
  kernel = w.T.reshape(-1, 64, 4, 4).transpose(0, 2, 3, 1).reshape(-1, 1024)
  return [kernel, b.reshape(64, 4, 4).transpose(1, 2, 0).reshape(1024)]


def torch_layout(config):
  """[(torch key prefix, Keras layer path, converter, torch weight shape)].

  The path names the Keras layer from the `LieGroupVAE` down ("encoder/group_features/conv_1"):
  the names `models/networks.py` gives its layers, so that a layer added to a network leaves the
  others' mapping as it is.
  """
  nc = config["num_channels"]
  groups, latents = config["subgroup_sizes"], config["subspace_sizes"]
  group_size, num_latents = sum(groups), sum(latents)
  layout = [
      ("encoder.prior_group.0", "encoder/group_features/conv_1", _conv, (32, nc, 4, 4)),
      ("encoder.prior_group.2", "encoder/group_features/conv_2", _conv, (32, 32, 4, 4)),
      ("encoder.prior_group.4", "encoder/group_features/conv_3", _conv, (64, 32, 4, 4)),
      ("encoder.prior_group.6", "encoder/group_features/conv_4", _conv, (64, 64, 4, 4)),
      ("encoder.prior_group.9", "encoder/group_features/dense_1", _dense_from_chw, (256, 1024)),
      ("encoder.prior_group.11", "encoder/group_features/dense_2", _dense, (group_size, 256)),
  ]
  for i, (s, d) in enumerate(zip(groups, latents)):
    for torch_name, keras_name in (("to_means", "to_mean"), ("to_logvar", "to_logvar")):
      layout += [
          (f"encoder.{torch_name}.{i}.0", f"encoder/{keras_name}_{i}/hidden", _dense, (4 * s, s)),
          (f"encoder.{torch_name}.{i}.2", f"encoder/{keras_name}_{i}/out", _dense, (d, 4 * s)),
      ]
  if config["no_exp"]:
    layout += [
        ("decoder.fake_exp.0", "fake_exp/hidden", _dense, (4 * num_latents, num_latents)),
        ("decoder.fake_exp.2", "fake_exp/out", _dense, (group_size, 4 * num_latents)),
    ]
  layout += [
      ("decoder.post_exp.0", "decoder/post_exp/dense_1", _dense, (256, group_size)),
      ("decoder.post_exp.2", "decoder/post_exp/dense_2", _dense_to_chw, (1024, 256)),
      ("decoder.post_exp.5", "decoder/post_exp/deconv_1", _deconv, (64, 64, 4, 4)),
      ("decoder.post_exp.7", "decoder/post_exp/deconv_2", _deconv, (64, 32, 4, 4)),
      ("decoder.post_exp.9", "decoder/post_exp/deconv_3", _deconv, (32, 32, 4, 4)),
      ("decoder.post_exp.11", "decoder/post_exp/deconv_4", _deconv, (32, nc, 4, 4)),
  ]
  return layout


def keras_layer(vae, path):
  """The layer of the built `vae` at `path`, each name that of a direct sub-layer of the last."""
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  layer = vae
  for name in path.split("/"):
    # `submodules` holds every nested layer; the direct ones are those no other one holds.
    nested = [m for m in layer.submodules if isinstance(m, keras.layers.Layer)]
    deeper = {id(m) for n in nested for m in n.submodules}
    found = [m for m in nested if id(m) not in deeper and m.name == name]
    if len(found) != 1:
      raise ValueError(f"{path}: {len(found)} layers named {name!r} in {layer.name} (its "
                       f"layers: {sorted(m.name for m in nested if id(m) not in deeper)})")
    layer = found[0]
  return layer


def _basis_keys(config):
  """[(subgroup index, [decoder.lie_alg_basis_ls.k for its latents], m)]."""
  keys, k = [], 0
  for i, (s, d) in enumerate(zip(config["subgroup_sizes"], config["subspace_sizes"])):
    keys.append((i, [f"decoder.lie_alg_basis_ls.{k + j}" for j in range(d)], int(round(s**0.5))))
    k += d
  return keys


def expected_shapes(config):
  """{torch state_dict key: shape} of the paper code's LieCeleb with these settings."""
  shapes = {}
  for prefix, _, convert, weight_shape in torch_layout(config):
    # ConvTranspose2d weights are (in, out, h, w); Conv2d and Linear weights (out, in, ...).
    out_size = weight_shape[1] if convert is _deconv else weight_shape[0]
    shapes[f"{prefix}.weight"] = tuple(weight_shape)
    shapes[f"{prefix}.bias"] = (out_size,)
  for _, keys, m in _basis_keys(config):
    shapes.update({key: (1, m, m) for key in keys})
  return shapes


def check_state_dict(state, config, path="model.pt"):
  """Raises a UserError naming every missing or unexpected key and every shape mismatch."""
  expected = expected_shapes(config)
  settings = (f"args.pt's settings: nc={config['num_channels']}, "
              f"subgroup_sizes_ls={config['subgroup_sizes']}, "
              f"subspace_sizes_ls={config['subspace_sizes']}, no_exp={config['no_exp']}")
  mismatched = [f"{k}: checkpoint {tuple(state[k].shape)}, expected {shape}"
                for k, shape in expected.items() if k in state and tuple(state[k].shape) != shape]
  if mismatched:
    raise UserError(f"{path}: shape mismatch for {'; '.join(mismatched)} (expected from "
                    f"{settings}). Is args.pt the one saved with this model.pt?")
  missing = [k for k in expected if k not in state]
  if missing:
    raise UserError(f"{path}: missing keys {missing} (expected from {settings}). Is args.pt "
                    "the one saved with this model.pt?")
  unexpected = [f"{k} {tuple(state[k].shape)}" for k in state if k not in expected]
  if unexpected:
    raise UserError(f"{path}: unexpected keys {unexpected}, which LieCeleb with {settings} does "
                    "not have. Is args.pt the one saved with this model.pt?")


def converted_weights(vae, state, config):
  """[(Keras variable of the built `vae`, the value of `state` it takes, in Keras' layout)]."""
  pairs = []
  for prefix, path, convert, _ in torch_layout(config):
    layer = keras_layer(vae, path)
    pairs += zip((layer.kernel, layer.bias),
                 convert(state[f"{prefix}.weight"], state[f"{prefix}.bias"]))
  for i, keys, _ in _basis_keys(config):
    pairs.append((vae.exp_map.bases[i], np.concatenate([state[k] for k in keys], axis=0)))
  return pairs


def assign_weights(vae, state, config):
  """Copies every weight of the paper code's `state` into the built Keras `vae`."""
  check_state_dict(state, config)
  for variable, value in converted_weights(vae, state, config):
    variable.assign(np.ascontiguousarray(value))


# The two entry points.


def read_checkpoint(checkpoint_dir):
  """(state {key: array}, LieGroupVAE kwargs, dlib dataset name, args Namespace), validated."""
  model_path, args_path = checkpoint_files(checkpoint_dir)
  args = read_args(args_path)
  config, dataset_name = config_from_args(args, args_path)
  state = read_state_dict(model_path)
  check_state_dict(state, config, model_path)
  return state, config, dataset_name, args


def _new_model(config, through_gin=False):
  """A built LieGroupVAE; `through_gin` binds its settings in gin and calls the configurable,
  so that gin's operative config records them (as in `lievae_train`)."""
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import models  # pylint: disable=g-import-not-at-top
  if through_gin:
    for name, value in config.items():
      if name != "num_channels":
        gin.bind_parameter(f"LieGroupVAE.{name}", value)
    vae = models.LieGroupVAE(num_channels=config["num_channels"])
  else:
    vae = models.LieGroupVAE(**config)
  return vae.build_variables([IMAGE_SIZE, IMAGE_SIZE, config["num_channels"]])


def load_checkpoint(checkpoint_dir):
  """The paper code's checkpoint as a Keras `LieGroupVAE`.

  Args:
    checkpoint_dir: `<log_path>/version_N/checkpoints` (or `version_N`), with model.pt, args.pt.

  Returns:
    (model, config): the built `LieGroupVAE` with every weight of the checkpoint, and a dict of
    its `LieGroupVAE` keyword arguments plus `dataset_name` (dlib's name of the paper code's
    dataset) and `paper_args` (the checkpoint's args as a dict).
  """
  state, config, dataset_name, args = read_checkpoint(checkpoint_dir)
  vae = _new_model(config)
  assign_weights(vae, state, config)
  return vae, dict(config, dataset_name=dataset_name, paper_args=vars(args))


def write_model_dir(config, dataset_name, model_dir, set_weights, results_dict, started=None):
  """Writes `model_dir/tfhub` and `model_dir/results` of a LieGroupVAE as `lievae_train` would.

  The model has the settings `config`, its weights are set by `set_weights(vae)`; the operative
  gin config saved in `results/gin/train.gin` holds `dataset.name` and the `LieGroupVAE`
  settings. Clears gin's configuration before and after. Returns the exported model.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf.interop import export  # pylint: disable=g-import-not-at-top
  started = time.time() if started is None else started
  gin.clear_config()
  try:
    vae = _new_model(config, through_gin=True)
    set_weights(vae)
    data.record_dataset_name(dataset_name)
    export.export_tfhub(vae, [IMAGE_SIZE, IMAGE_SIZE, config["num_channels"]],
                        os.path.join(model_dir, model_dir_lib.TFHUB_DIR))
    # Written last: its presence marks the model finished, as for lievae_train.
    export.write_results(os.path.join(model_dir, model_dir_lib.RESULTS_DIR),
                         dict(results_dict, elapsed_time=time.time() - started))
  finally:
    gin.clear_config()
  return vae


def import_checkpoint(checkpoint_dir, model_dir, overwrite=False):
  """`lievae_import_torch`: the checkpoint -> `model_dir/tfhub` and `model_dir/results`.

  Both are written by `lievae_tf.interop.export`, as `lievae_train` writes them; the operative gin
  config saved in `results/gin/train.gin` holds `dataset.name` and the `LieGroupVAE` settings.
  Clears gin's configuration before and after. Returns (model, config) as `load_checkpoint`.
  """
  started = time.time()
  state, config, dataset_name, args = read_checkpoint(checkpoint_dir)  # fail before writing
  # Not resumable: anything else there (an unfinished training run, say) would be mixed in.
  model_dir_lib.prepare(model_dir, overwrite, resume=False, overwrite_does="replace it")
  results_dict = dict(imported_from=os.path.abspath(checkpoint_dir), paper_model=args.model,
                      paper_dataset=args.dataset)
  vae = write_model_dir(config, dataset_name, model_dir,
                        lambda vae: assign_weights(vae, state, config), results_dict, started)
  return vae, dict(config, dataset_name=dataset_name, paper_args=vars(args))
