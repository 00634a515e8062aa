"""Scoring with a TF-Hub module's weights frozen to constants.

disentanglement_lib's `evaluate` encodes every image of a metric through
`hub.eval_function_for_module(module_path)`: a TF1 graph that reads the module's weights from
variables at every call. On CPU, TF's oneDNN convolutions then reorder each filter into their
blocked layout at every call, as they must for weights that may change (training). A metric never
changes them, so here the module is loaded once, its variables are replaced by constants
(`convert_variables_to_constants`), and each signature is run through one callable of a plain
session: oneDNN reorders constant filters once and keeps them, and the call skips the monitored
session's wrappers. The outputs equal the stock path's to float rounding (the blocked filters
take another summation order), and MIG and FactorVAE scores agree to 1e-4
(tests/test_frozen_scoring.py).

`lievae_tf.compat` sets dlib's `evaluate.hub` to `HubForScoring` (`use_in_dlib_evaluate`): only
that module sees the frozen function; `tensorflow_hub` itself (export, training, `hub.KerasLayer`
reuse) is untouched. LIEVAE_TF_FROZEN_SCORING=0 in the environment keeps the stock function there
(an escape hatch, e.g. to rule the freezing out when a score looks wrong).
"""

import contextlib
import os

ENV_VAR = "LIEVAE_TF_FROZEN_SCORING"
FROZEN_LOG_MARK = "Scoring with the module's weights frozen to constants"


def enabled():
  return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


class HubForScoring:
  """`tensorflow_hub` as dlib's `evaluate` sees it: every attribute is `tensorflow_hub`'s except
  `eval_function_for_module`, which freezes the module's weights."""

  def __init__(self, hub):
    self._hub = hub

  def __getattr__(self, name):
    return getattr(self._hub, name)

  def __repr__(self):
    return f"<tensorflow_hub with weights-frozen eval_function_for_module: {self._hub!r}>"

  @staticmethod
  def eval_function_for_module(spec, tags=None):
    return eval_function_for_module(spec, tags=tags)


def use_in_dlib_evaluate(evaluate_module):
  """Puts `HubForScoring` in place of `evaluate_module.hub` (once; not if switched off)."""
  if enabled() and not isinstance(evaluate_module.hub, HubForScoring):
    evaluate_module.hub = HubForScoring(evaluate_module.hub)


@contextlib.contextmanager
def eval_function_for_module(spec, tags=None):
  """`hub.eval_function_for_module` (same arguments and returned function), weights frozen."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  from tensorflow_hub import module as hub_module  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  tf1 = tf.compat.v1
  # Says in the evaluation log which path scored (tests/test_frozen_scoring.py reads it).
  logging.info("%s: %s", FROZEN_LOG_MARK, spec)
  original_graph = tf1.get_default_graph()

  with tf.Graph().as_default() as graph:
    module = hub.Module(spec, tags=tags)
    placeholders, outputs = {}, {}
    for signature in module.get_signature_names():
      input_info = module.get_input_info_dict(signature)
      if any(info.is_composite for info in input_info.values()):
        raise ValueError(f"signature {signature!r} has sparse or composite inputs: freezing "
                         "supports dense tensors only (set LIEVAE_TF_FROZEN_SCORING=0)")
      # Scoped by signature, as the stock function does: signatures share input names.
      with tf1.variable_scope(signature):
        placeholders[signature] = {
            name: tf1.placeholder(info.dtype, shape=info.get_shape(), name=name)
            for name, info in input_info.items()}
        outputs[signature] = module(placeholders[signature], signature=signature, as_dict=True)
    with tf1.Session(graph=graph) as session:
      # hub.Module's variable initializers read the module's weights from its files.
      session.run([tf1.global_variables_initializer(), tf1.tables_initializer()])
      fetch_ops = sorted({t.op.name for out in outputs.values() for t in out.values()})
      frozen = tf1.graph_util.convert_variables_to_constants(
          session, graph.as_graph_def(), fetch_ops)

  with tf.Graph().as_default() as frozen_graph:
    tf.graph_util.import_graph_def(frozen, name="")
  as_frozen = lambda t: frozen_graph.get_tensor_by_name(t.name)
  session = tf1.Session(graph=frozen_graph)
  try:
    callables = {}
    for signature, signature_inputs in placeholders.items():
      names = sorted(signature_inputs)
      feeds = [as_frozen(signature_inputs[n]) for n in names]
      fetches = {k: as_frozen(t) for k, t in outputs[signature].items()}
      callables[signature] = (names, feeds, session.make_callable(fetches, feeds))

    def func(inputs=None, _sentinel=None, signature=None, as_dict=None):  # pylint: disable=invalid-name
      """Evaluates a signature of the module on numpy inputs, as the stock function does."""
      del _sentinel
      signature = signature or "default"
      names, feeds, run = callables[signature]
      dict_inputs = hub_module._prepare_dict_inputs(  # pylint: disable=protected-access
          inputs, dict(zip(names, feeds)))
      output = run(*[_as_array(dict_inputs[n], t.dtype) for n, t in zip(names, feeds)])
      return hub_module._prepare_outputs(output, as_dict)  # pylint: disable=protected-access

    with original_graph.as_default():  # as the stock function leaves it
      yield func
  finally:
    session.close()


def _as_array(value, dtype):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.asarray(value, dtype=dtype.as_numpy_dtype)
