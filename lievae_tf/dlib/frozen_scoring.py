"""Scoring with a TF-Hub module's weights frozen to constants.

Needed by: no version (a speed-up, `speedups`). It replaces what disentanglement-lib 1.5's
`evaluate` calls of tensorflow_hub, `eval_function_for_module` (hub 0.15's, or `tf1_hub`'s on
hub 0.16), with the same arguments and returned function. This module was
`lievae_tf.evaluation.frozen_module`, a name that still imports it.

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

`use_in_dlib_evaluate` sets dlib's `evaluate.hub` to `HubForScoring`: only that module sees the
frozen function; `tensorflow_hub` itself (`hub.KerasLayer` reuse) is untouched. It is one of
`lievae_tf.dlib.speedups`: `lievae_evaluate` uses it, and the stock `dlib_evaluate` unless
LIEVAE_TF_DLIB_SPEEDUPS=0 (e.g. to rule the freezing out when a score looks wrong).
"""

FROZEN_LOG_MARK = "Scoring with the module's weights frozen to constants"


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
  """Puts `HubForScoring` in place of `evaluate_module.hub` (once)."""
  if not isinstance(evaluate_module.hub, HubForScoring):
    evaluate_module.hub = HubForScoring(evaluate_module.hub)


def eval_function_for_module(spec, tags=None):
  """`hub.eval_function_for_module` (same arguments and returned function), weights frozen."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from lievae_tf.dlib import tf1_hub  # pylint: disable=g-import-not-at-top
  # Says in the evaluation log which path scored (tests/test_frozen_scoring.py reads it).
  logging.info("%s: %s", FROZEN_LOG_MARK, spec)
  return tf1_hub.eval_function_for_module(spec, tags=tags, freeze=True)
