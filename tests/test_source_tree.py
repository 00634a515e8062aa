"""The source tree keeps its promises to its readers: a path that a doc or a docstring names exists,
and each name the package shares between stages is defined in one place."""

import glob
import os
import re

import pytest

import conftest

# Where users and developers read pointers: the commands' --help text, the package's docstrings
# and comments, the docs.
_POINTER_SOURCES = ("bin/*", "lievae_tf/**/*.py", "lievae_tf/**/*.gin", "docs/*.md", "README.md")
# A repository path: a top-level directory of ours, then a file name with its extension.
_POINTER = re.compile(r"(?<![\w/.$-])((?:bin|bench|docs|gin_configs|lievae_tf|scripts|tests)/"
                      r"[\w./-]*\.(?:py|md|gin|sh|txt|toml|csv|png|json))\b")
# docs/extending.md's example of a user's own metric, which the reader writes.
_EXAMPLES = re.compile(r"/my_\w+\.")


def _files(patterns):
  found = []
  for pattern in patterns:
    found += [p for p in glob.glob(os.path.join(conftest.REPO, pattern), recursive=True)
              if os.path.isfile(p)]
  return sorted(set(found))


def test_repository_paths_named_in_docs_and_docstrings_exist():
  missing = []
  for path in _files(_POINTER_SOURCES):
    with open(path, errors="replace") as f:
      for named in _POINTER.findall(f.read()):
        if not _EXAMPLES.search(named) and not os.path.exists(os.path.join(conftest.REPO, named)):
          missing.append(f"{os.path.relpath(path, conftest.REPO)} names {named}")
  assert not missing, "\n".join(missing)


# (what, a pattern that matches its definition): each must match once in the package and its
# commands. Literals are listed where a copy would be a literal (a grid, a denylist, a message).
_DEFINED_ONCE = [
    ("a metric's protocols", r"^PROTOCOLS\s*="),
    ("a study's protocol choices", r"^PROTOCOL_CHOICES\s*="),
    ("the public 3DShapes grid", r"\(10, 10, 10, 8, 4, 15\)"),
    ("the batch orders", r"[\[(]\s*[\"']uniform[\"'],\s*[\"']epochs[\"']\s*[\])]"),
    ("the dlib-argument denylist", r"[\"']representation_function[\"'],\s*[\"']random_state"),
    ("a step's finished marker", r"RESULTS_DIR,\s*[\"']aggregate[\"']"),
    ("the aggregation command", r"^\s*def aggregate_command\b"),
    ("training's step counting", r"_epoch_start_step\s*=\s*int\("),
    ("the reconstruction-loss check",
     r"UserError\(f[\"'](?:recons_loss_type|reconstruction loss) "),
]


@pytest.mark.parametrize("what,definition", _DEFINED_ONCE, ids=[w for w, _ in _DEFINED_ONCE])
def test_each_shared_name_is_defined_once(what, definition):
  pattern = re.compile(definition, re.M)
  found = []
  for path in _files(("lievae_tf/**/*.py", "bin/*")):
    with open(path, errors="replace") as f:
      found += [os.path.relpath(path, conftest.REPO)] * len(pattern.findall(f.read()))
  assert len(found) == 1, f"{what}: defined in {found or 'no file'}"
