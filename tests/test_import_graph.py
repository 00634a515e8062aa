"""The package's stages (docs/extending.md), and that no import runs from a stage back up.

Two checks, for two kinds of arrow: every `import` statement of every module, module-level or inside
a function (most of the package's imports of disentanglement_lib adapters are deferred to keep the
`.pth` hook cheap, and a deferred arrow is still an arrow); and, in a fresh process, every module
imported with the stages above its own blocked, which also covers what a package's `__init__`
pulls in and `importlib.import_module` calls.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys

import lievae_tf

from conftest import REPO

PACKAGE = os.path.dirname(lievae_tf.__file__)

# Lowest first; a module may import its own stage and those below. A name is a module or a
# package (all of its modules).
STAGES = (
    ("lievae_tf.errors", "lievae_tf.model_dir", "lievae_tf.random_streams", "lievae_tf.keras2",
     "lievae_tf.gin_configs"),
    ("lievae_tf.data",),
    ("lievae_tf.dlib", "lievae_tf.compat"),  # compat: the old name of dlib.shims
    ("lievae_tf.models",),
    ("lievae_tf.interop",),
    ("lievae_tf.training", "lievae_tf.visualize"),
    ("lievae_tf.evaluation",),
    ("lievae_tf.pipeline",),
    ("lievae_tf.cli",),
)


def _package_modules():
  """{module name: its file} of every module of the package (the root `lievae_tf` included)."""
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        parts = os.path.relpath(os.path.join(directory, f[:-3]), os.path.dirname(PACKAGE))
        name = parts.replace(os.sep, ".").removesuffix(".__init__")
        found[name] = os.path.join(directory, f)
  gin_configs = importlib.util.find_spec("lievae_tf.gin_configs")  # mapped from gin_configs/
  found[gin_configs.name] = gin_configs.origin
  return found


def stage_of(module):
  """The index in STAGES of `module` (the root package is below every stage), or None."""
  if module == "lievae_tf":
    return -1
  for index, names in enumerate(STAGES):
    if any(module == n or module.startswith(n + ".") for n in names):
      return index
  return None


def _imported_names(path, module, modules):
  """(line, name) of each lievae_tf module that the file of `module` imports, wherever it does."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        # `from lievae_tf import data` imports the module lievae_tf.data; otherwise an attribute.
        yield node.lineno, (f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                            else base)


def test_every_module_has_a_stage():
  assert [m for m in _package_modules() if stage_of(m) is None] == []


def test_no_import_statement_runs_up_the_stages():
  modules = _package_modules()
  upward = []
  for module, path in sorted(modules.items()):
    for line, name in _imported_names(path, module, modules):
      if name != "lievae_tf" and not name.startswith("lievae_tf."):
        continue
      if stage_of(name) is not None and stage_of(name) > stage_of(module):
        upward.append(f"{os.path.relpath(path, REPO)}:{line} imports {name}")
  assert upward == []


_IMPORT_BY_STAGE = r"""
import importlib, json, sys
stages = json.loads(sys.argv[1])
# The environment's .pth hook imported the shims at start-up: every stage is imported afresh here.
for name in [m for m in sys.modules if m == "lievae_tf" or m.startswith("lievae_tf.")]:
  del sys.modules[name]

class BlockUpperStages:
  blocked = ()
  def find_spec(self, name, path=None, target=None):
    if any(name == b or name.startswith(b + ".") for b in self.blocked):
      raise ImportError(f"{name} is above the stage being imported")
    return None

blocker = BlockUpperStages()
sys.meta_path.insert(0, blocker)
failures = {}
for index, (names, modules) in enumerate(stages):
  blocker.blocked = tuple(n for upper, _ in stages[index + 1:] for n in upper)
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as e:
      failures[module] = f"{type(e).__name__}: {e}"
print(json.dumps(failures))
"""


def test_each_stage_imports_with_the_stages_above_it_blocked():
  modules = sorted(_package_modules())
  stages = [(names, [m for m in modules if stage_of(m) == index])
            for index, names in enumerate(STAGES)]
  result = subprocess.run([sys.executable, "-c", _IMPORT_BY_STAGE, json.dumps(stages)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


def test_the_docs_list_the_stages_in_their_order():
  with open(os.path.join(REPO, "docs", "extending.md")) as f:
    text = f.read()
  packages = [n for names in STAGES for n in names
              if os.path.isdir(os.path.join(os.path.dirname(PACKAGE), *n.split(".")))]
  rows = [text.find(f"| `{p.replace('.', '/')}/` |") for p in packages]
  assert -1 not in rows and rows == sorted(rows), dict(zip(packages, rows))
