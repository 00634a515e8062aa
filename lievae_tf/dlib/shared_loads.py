"""While open, disentanglement_lib's `evaluate` loads each dataset and each module once.

Needed by: no version (a speed-up of `lievae_tf.evaluation.suite`, the metric suite). It wraps
what disentanglement-lib 1.5's `evaluate` looks up at each call, `named_data`'s dataset modules and
`evaluate.hub` (tensorflow_hub's `eval_function_for_module`), so the metrics of one suite process
share one dataset instance and one open module; the suite's docstring says why that cannot change
a result. It was the suite's `_shared_loads`.
"""

import contextlib
import inspect
import os

from lievae_tf.dlib import speedups


class SharedConstructors:
  """Stands in for a dataset module in `named_data`: its classes return one instance per
  (class, arguments)."""

  def __init__(self, module, instances):
    self._module, self._instances = module, instances

  def __getattr__(self, name):
    value = getattr(self._module, name)
    if not inspect.isclass(value):
      return value

    def construct(*args, **kwargs):
      key = (self._module.__name__, name, repr(args), repr(sorted(kwargs.items())))
      if key not in self._instances:
        self._instances[key] = value(*args, **kwargs)
      return self._instances[key]

    return construct


class SharedModule:
  """Stands in for `tensorflow_hub` in dlib's `evaluate`: one open module per path."""

  def __init__(self, hub, stack):
    self._hub, self._stack, self._functions = hub, stack, {}

  def __getattr__(self, name):
    return getattr(self._hub, name)

  @contextlib.contextmanager
  def eval_function_for_module(self, path, *args, **kwargs):
    key = (os.path.abspath(path), repr(args), repr(sorted(kwargs.items())))
    if key not in self._functions:
      self._functions[key] = self._stack.enter_context(
          self._hub.eval_function_for_module(path, *args, **kwargs))
    yield self._functions[key]


@contextlib.contextmanager
def shared_loads():
  """While open, dlib's `evaluate` loads each dataset and each module once, scores through the
  weights-frozen module and holds Shapes3D as uint8 (`speedups`)."""
  from disentanglement_lib.data.ground_truth import named_data  # pylint: disable=g-import-not-at-top
  from disentanglement_lib.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  speedups.apply_now()
  dataset_modules = {name: value for name, value in vars(named_data).items()
                     if inspect.ismodule(value) and
                     value.__name__.startswith("disentanglement_lib.data.ground_truth.")}
  instances = {}
  original_hub = evaluate.hub
  with contextlib.ExitStack() as stack:
    try:
      for name, module in dataset_modules.items():
        setattr(named_data, name, SharedConstructors(module, instances))
      evaluate.hub = SharedModule(original_hub, stack)
      yield
    finally:
      evaluate.hub = original_hub
      for name, module in dataset_modules.items():
        setattr(named_data, name, module)
