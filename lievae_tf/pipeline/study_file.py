"""`lievae_sweep --study_file=PATH`: a study written by its user, with disentanglement_lib's own
`disentanglement_lib.utils.hyperparams` (`sweep`, `product`, `zipit`, ...) over gin bindings.

The file is Python; it defines
  GIN_CONFIGS  the gin files every run trains with: names in this repository's gin_configs/, or
               paths (relative ones from the study file's directory);
  BINDINGS     the grid: a list of dicts {gin parameter: value}, one setting per dict (what
               `hyperparams.sweep/product/zipit` return);
  METRICS      optional: the metric names that score each run (default: the paper's table,
               factor_vae, mig, sap, dci, at dlib's sizes);
  DESCRIPTION  optional: one line for `lievae_sweep --list`-style output.
Seeds come from `--seeds`, as for the built-in studies. Each setting's name (its directory under
`--output_dir`) is made of its bindings, e.g. `hy_hes=40,forward_eg_prob=0.2`.
"""

import os
import re
import runpy

from lievae_tf import gin_configs as shipped_gin_configs
from lievae_tf.errors import UserError
from lievae_tf.evaluation import registry
from lievae_tf.pipeline import studies

_PARAMETER = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")  # [scope/]Configurable.parameter


def _setting_name(binding):
  parts = [f"{name.rsplit('.', 1)[-1]}={value}" for name, value in binding.items()]
  # A directory name: no path separators or spaces.
  return re.sub(r"[^\w.=,+@-]", "_", ",".join(parts)) or "default"


def load(path):
  """The Study defined by the file at `path`; a mistake in it is a one-line UserError."""
  from disentanglement_lib.utils import hyperparams  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise UserError(f"--study_file={path}: no such file.")
  where = f"--study_file={path}"
  try:
    defined = runpy.run_path(path, run_name="lievae_study")
  except SyntaxError as e:
    raise UserError(f"{where}: syntax error, line {e.lineno}: {e.msg}.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{where}: running it raised {type(e).__name__}: "
                    f"{' '.join(str(e).split())}.") from None
  for name in ("GIN_CONFIGS", "BINDINGS"):
    if name not in defined:
      raise UserError(f"{where} defines no {name}: see docs/studies.md (a study file).")
  here = os.path.dirname(os.path.abspath(path))
  gin_configs = defined["GIN_CONFIGS"]
  if isinstance(gin_configs, str) or not isinstance(gin_configs, (list, tuple)) or not gin_configs:
    raise UserError(f"{where}: GIN_CONFIGS must be a non-empty list of gin files, e.g. "
                    "['dsprites.gin'].")
  resolved = []
  for config in gin_configs:
    candidates = [config] if os.path.isabs(config) else [os.path.join(here, config)]
    if os.path.basename(config) == config and config in shipped_gin_configs.names():
      candidates.append(shipped_gin_configs.path(config))
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
      raise UserError(f"{where}: GIN_CONFIGS: {config!r} is neither beside the study file nor a "
                      f"shipped config ({', '.join(shipped_gin_configs.names())}).")
    resolved.append(os.path.abspath(found[0]))
  grid = defined["BINDINGS"]
  if not isinstance(grid, (list, tuple)) or not grid or not all(isinstance(b, dict) for b in grid):
    raise UserError(f"{where}: BINDINGS must be a non-empty list of dicts {{gin parameter: "
                    "value}, e.g. hyperparams.product([hyperparams.sweep('LieGroupVAE.hy_hes', "
                    "[20, 40])]).")
  settings, names = [], set()
  for binding in grid:
    for parameter in binding:
      if not isinstance(parameter, str) or not _PARAMETER.match(parameter):
        raise UserError(f"{where}: BINDINGS: {parameter!r} is not a gin parameter: write "
                        "Configurable.parameter, e.g. LieGroupVAE.hy_hes.")
    name = _setting_name(binding)
    if name in names:
      raise UserError(f"{where}: BINDINGS: the setting {name} comes twice.")
    names.add(name)
    settings.append(studies.Setting(name, tuple(resolved),
                                    tuple(hyperparams.to_bindings(binding))))
  metrics = defined.get("METRICS", studies.PAPER_TABLE_METRICS)
  if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)) or not metrics:
    raise UserError(f"{where}: METRICS must be a non-empty list of metric names, e.g. "
                    "['mig', 'factor_vae'].")
  study = studies.Study(str(defined.get("DESCRIPTION", f"the study of {path}")), tuple(settings),
                        studies.study_metrics(registry.lookup(list(metrics),
                                                              flag=f"{where}: METRICS")))
  check_bindings(study, where)
  return study


def check_bindings(study, where):
  """Each setting's gin files and bindings parse with the configurables lievae_train registers:
  a misspelt parameter or a bad value is named before anything is submitted."""
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import run  # pylint: disable=g-import-not-at-top
  for setting in study.settings:
    try:
      run.parse_gin(setting.gin_configs, setting.bindings)
    except UserError as e:
      raise UserError(f"{where}: the setting {setting.name} ({'; '.join(setting.bindings)}): "
                      f"{e}") from None
    finally:
      gin.clear_config()
