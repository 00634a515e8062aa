"""`lievae_sweep --study_file`: a study written with disentanglement_lib's own hyperparams over gin
bindings expands into one setting per grid point; a bad file stops with one line naming what is
wrong."""

import shlex

from conftest import command

GRID = """
from disentanglement_lib.utils import hyperparams as h
GIN_CONFIGS = ["dsprites.gin"]
BINDINGS = h.product([h.sweep("LieGroupVAE.hy_hes", [20.0, 40.0, 80.0]),
                      h.sweep("LieGroupVAE.forward_eg_prob", [0.2, 0.5])])
METRICS = ["mig"]
"""


def _error_line(result):
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  line = result.stderr.rstrip().splitlines()[-1]
  assert line.startswith("lievae_sweep: error: "), result.stderr[-3000:]
  return line


def test_a_study_file_grid_gives_one_setting_per_point(tmp_path):
  study = tmp_path / "grid.py"
  study.write_text(GRID)
  result = command("lievae_sweep", f"--study_file={study}", "--seeds=0-1",
                   f"--output_dir={tmp_path / 'out'}", "--print_commands")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 3 * 2 * 2 + 1  # settings x seeds, then the aggregation
  grid = set()
  for line in lines[:-1]:
    args = shlex.split(line.split(" && ")[0])
    bindings = [a[len("--gin_bindings="):] for a in args if a.startswith("--gin_bindings=")]
    hes = [b for b in bindings if b.startswith("LieGroupVAE.hy_hes = ")]
    forward = [b for b in bindings if b.startswith("LieGroupVAE.forward_eg_prob = ")]
    seed = [b for b in bindings if b.startswith("model.random_seed = ")]
    assert len(hes) == len(forward) == len(seed) == 1, bindings
    model_dir = [a for a in args if a.startswith("--model_dir=")][0]
    setting = f"hy_hes={hes[0].split(' = ')[1]},forward_eg_prob={forward[0].split(' = ')[1]}"
    assert model_dir.endswith(f"/{setting}/seed{seed[0].split(' = ')[1]}"), (model_dir, setting)
    assert "--metrics=mig" in line
    grid.add((hes[0], forward[0], seed[0]))
  assert len(grid) == 12
  assert not (tmp_path / "out").exists()


def test_a_bad_study_file_is_named_in_one_line(tmp_path):
  study = tmp_path / "study.py"
  args = [f"--study_file={study}", f"--output_dir={tmp_path / 'out'}", "--print_commands"]
  study.write_text(GRID.replace("LieGroupVAE.hy_hes", "LieGroupVAE.hy_hess"))
  line = _error_line(command("lievae_sweep", *args))
  assert "LieGroupVAE.hy_hess = 20.0" in line and "doesn't have a parameter named" in line, line
  study.write_text(GRID.replace("BINDINGS =", "GRID ="))
  assert "defines no BINDINGS" in _error_line(command("lievae_sweep", *args))
  study.write_text(GRID.replace('"mig"', '"migg"'))
  line = _error_line(command("lievae_sweep", *args))
  assert "METRICS" in line and "migg" in line, line
  assert not (tmp_path / "out").exists()
