"""TF1 Hub modules (the format disentanglement_lib exports, postprocesses and scores), on any TF 2.

Needed by: tensorflow-hub 0.16 (current stack), which removed the TF1 module API that
disentanglement-lib 1.5 calls (`hub.Module`, `create_module_spec` and the spec's `export`,
`add_signature`, `load_module_spec`, `eval_function_for_module`) but kept `hub.load` and
`hub.KerasLayer`, which still read the format; `shims.add_tf1_hub_api` lends it to
`tensorflow_hub` there. Our export and scoring use it on both stacks (one code path). This module
writes and reads that format with TensorFlow's own SavedModel tools, for what dlib and lievae_tf
need of it (dlib's own `utils/convolute_hub_test.py` runs on it, tests/test_tf1_hub.py):

- a module directory holds `saved_model.pb` (one MetaGraphDef per tag set, the module's signatures
  as its `signature_def`s), `variables/` (a name-based checkpoint of the module's variables),
  `assets/` and `tfhub_module.pb` (the format marker, FORMAT_V3);
- `create_module_spec(module_fn, tags_and_args)` builds one graph per tag set; the spec's
  `export(path, checkpoint_path=...)` writes it with its variables read from a checkpoint (how
  dlib's `export_as_tf_hub` exports a trained model);
- `Module(spec_or_path)` instantiates a module in the current TF1 graph: its variables are
  created once (initialised from the module's checkpoint), and each call imports the ops that the
  signature's outputs need, wired to the caller's inputs and to those variables;
- `eval_function_for_module(path)` loads one tag set into a session of its own.

Gradients through an instantiated `Module`, and modules with assets or table initialisers, are
tensorflow-hub 0.15's (the pinned stack, docs/environment.md), not this module's. This module
was `lievae_tf.interop.tf1_hub`, a name that still imports it.
"""

import collections
import contextlib
import os

import numpy as np
import tensorflow as tf

from lievae_tf import model_dir

tf1 = tf.compat.v1

# tfhub_module.pb: a ModuleDef proto whose only field is `format = FORMAT_V3` (field 1, enum 3).
MODULE_DEF_BYTES = b"\x08\x03"
MODULE_DEF_FILE = "tfhub_module.pb"
DEFAULT_SIGNATURE = "default"

# The signatures `add_signature` collects while a `create_module_spec` builds a graph.
_signatures_being_built = []


def add_signature(name=DEFAULT_SIGNATURE, inputs=None, outputs=None):
  """Within a `module_fn`: the module's signature `name` maps `inputs` to `outputs`.

  `inputs` and `outputs` are dicts of tensors or single tensors (named "default").
  """
  if not _signatures_being_built:
    raise RuntimeError("add_signature is only valid inside the module_fn of create_module_spec")
  as_dict = lambda t: {} if t is None else dict(t) if isinstance(t, dict) else {DEFAULT_SIGNATURE: t}
  _signatures_being_built[-1][name] = (as_dict(inputs), as_dict(outputs))


class TensorInfo(collections.namedtuple("TensorInfo", ["dtype", "shape"])):
  """What a signature says of one input or output (the fields `hub.ParsedTensorInfo` has)."""

  is_sparse = False
  is_composite = False

  def get_shape(self):
    return self.shape


def _infos(tensor_infos):
  return {name: TensorInfo(tf.as_dtype(info.dtype), tf.TensorShape(info.tensor_shape))
          for name, info in tensor_infos.items()}


class ModuleSpec:
  """A module's graphs (one MetaGraphDef per tag set) and, if read from disk, its checkpoint."""

  def __init__(self, meta_graphs, checkpoint_prefix=None):
    self._meta_graphs = {frozenset(mg.meta_info_def.tags): mg for mg in meta_graphs}
    self._checkpoint_prefix = checkpoint_prefix

  @property
  def checkpoint_prefix(self):
    return self._checkpoint_prefix

  def get_tags(self):
    return [set(tags) for tags in self._meta_graphs]

  def meta_graph(self, tags=None):
    tags = frozenset(tags or ())
    if tags not in self._meta_graphs:
      raise ValueError(f"the module has no graph for tags {sorted(tags)}; it has "
                       f"{[sorted(t) for t in self._meta_graphs]}")
    return self._meta_graphs[tags]

  def get_signature_names(self, tags=None):
    return list(self.meta_graph(tags).signature_def)

  def _signature(self, signature, tags):
    signature = signature or DEFAULT_SIGNATURE
    signatures = self.meta_graph(tags).signature_def
    if signature not in signatures:
      raise ValueError(f"the module has no signature {signature!r}; it has {sorted(signatures)}")
    return signatures[signature]

  def get_input_info_dict(self, signature=None, tags=None):
    return _infos(self._signature(signature, tags).inputs)

  def get_output_info_dict(self, signature=None, tags=None):
    return _infos(self._signature(signature, tags).outputs)

  def meta_graphs(self):
    return list(self._meta_graphs.values())

  def export(self, path, _sentinel=None, checkpoint_path=None, name_transform_fn=None):  # pylint: disable=invalid-name
    """Writes the module to the directory `path`, each variable's value read from the checkpoint
    `checkpoint_path` under its name in the module (or `name_transform_fn(name)`): how dlib's
    `export_as_tf_hub` writes a trained model."""
    del _sentinel
    if not checkpoint_path:
      raise ValueError("ModuleSpec.export needs checkpoint_path, the checkpoint that holds the "
                       "module's variables")
    name_in_checkpoint = name_transform_fn or (lambda name: name)
    reader = tf.train.load_checkpoint(checkpoint_path)
    stored_shapes = reader.get_variable_to_shape_map()
    values = {}
    for tags in self._meta_graphs:  # every tag set's variables (dlib's share one set)
      with tf.Graph().as_default():
        variables = Module(self, tags=tags).variable_map
      for name, variable in variables.items():
        stored = name_in_checkpoint(name)
        if stored not in stored_shapes:
          raise ValueError(f"{checkpoint_path} holds no variable {stored!r} (the module's "
                           f"{name!r}); it holds {sorted(stored_shapes)}")
        if not variable.shape.is_compatible_with(stored_shapes[stored]):
          raise ValueError(f"{checkpoint_path}: {stored!r} has shape {stored_shapes[stored]}, the "
                           f"module's {name!r} {variable.shape}")
        values[name] = reader.get_tensor(stored).astype(variable.dtype.base_dtype.as_numpy_dtype)
    write_module(path, self.meta_graphs(), values)


def create_module_spec(module_fn, tags_and_args=None, drop_collections=None):
  """Builds `module_fn(**args)` in a graph of its own for each `(tags, args)` (default: the
  default tag set, no arguments); the signatures are those `module_fn` adds."""
  del drop_collections  # Every collection a graph has is kept.
  meta_graphs = []
  for tags, args in tags_and_args or [(set(), {})]:
    with tf.Graph().as_default() as graph:
      _signatures_being_built.append({})
      try:
        module_fn(**args)
      finally:
        signatures = _signatures_being_built.pop()
      meta_graph = tf1.train.export_meta_graph(graph=graph, clear_devices=True)
      meta_graph.meta_info_def.tags[:] = sorted(tags)
      for name, (inputs, outputs) in signatures.items():
        meta_graph.signature_def[name].CopyFrom(
            tf1.saved_model.signature_def_utils.build_signature_def(
                {k: tf1.saved_model.utils.build_tensor_info(t) for k, t in inputs.items()},
                {k: tf1.saved_model.utils.build_tensor_info(t) for k, t in outputs.items()}))
    meta_graphs.append(meta_graph)
  return ModuleSpec(meta_graphs)


def load_module_spec(path):
  """The spec of the module at `path` (a directory written by `Module.export` or hub)."""
  if isinstance(path, ModuleSpec):
    return path
  saved_model_path = os.path.join(path, "saved_model.pb")
  if not tf.io.gfile.exists(saved_model_path):
    raise ValueError(f"{path} is no TF1 Hub module: {saved_model_path} does not exist")
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(saved_model_path, "rb") as f:
    saved_model.ParseFromString(f.read())
  return ModuleSpec(saved_model.meta_graphs, os.path.join(path, "variables", "variables"))


def _node_name(tensor_name):
  return tensor_name.split(":")[0].lstrip("^")


class Module:
  """A module instantiated in the current TF1 graph (hub 0.15's `hub.Module`, without gradients
  through its control flow)."""

  def __init__(self, spec, trainable=False, name="module", tags=None):
    self._spec = load_module_spec(spec)
    self._tags = frozenset(tags or ())
    self._meta_graph = self._spec.meta_graph(self._tags)
    graph = tf1.get_default_graph()
    # The import below opens this name scope itself, as the first user of the name.
    self._scope = graph.unique_name(name, mark_as_used=False)
    self._calls = 0
    trainable_before = set(tf1.trainable_variables())
    # The module's variables, once; the rest of this import (its signatures' ops) goes unused.
    tf1.train.import_meta_graph(self._meta_graph, import_scope=self._scope)
    prefix = self._scope + "/"
    imported = [v for v in tf1.global_variables() if v.op.name.startswith(prefix)]
    self._variable_map = collections.OrderedDict(
        (v.op.name[len(prefix):], v) for v in imported)
    if not trainable:
      trainables = graph.get_collection_ref(tf1.GraphKeys.TRAINABLE_VARIABLES)
      trainables[:] = [v for v in trainables if v in trainable_before]
    if self._spec.checkpoint_prefix:
      # The initialisers read the module's weights from its files.
      tf1.train.init_from_checkpoint(self._spec.checkpoint_prefix,
                                     {n: v for n, v in self._variable_map.items()})
    # Each variable's handle, by the name its ops have in the module's graph.
    self._handles = {f"{n}:0": v.handle for n, v in self._variable_map.items()}

  @property
  def variable_map(self):
    return self._variable_map

  @property
  def variables(self):
    return list(self._variable_map.values())

  def get_signature_names(self):
    return self._spec.get_signature_names(self._tags)

  def get_input_info_dict(self, signature=None):
    return self._spec.get_input_info_dict(signature, self._tags)

  def get_output_info_dict(self, signature=None):
    return self._spec.get_output_info_dict(signature, self._tags)

  def __call__(self, inputs=None, _sentinel=None, signature=None, as_dict=None):  # pylint: disable=invalid-name
    del _sentinel
    signature_def = self._spec._signature(signature, self._tags)  # pylint: disable=protected-access
    feeds = _as_input_dict(inputs, list(signature_def.inputs))
    output_names = sorted(signature_def.outputs)
    output_tensors = [signature_def.outputs[n].name for n in output_names]
    graph_def = tf1.graph_util.extract_sub_graph(
        self._meta_graph.graph_def, sorted({_node_name(t) for t in output_tensors}))
    # The variables' own ops are not imported again: their consumers read this module's.
    variable_nodes = {_node_name(h) for h in self._handles}
    pruned = tf1.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.library.CopyFrom(graph_def.library)
    pruned.node.extend(n for n in graph_def.node if n.name not in variable_nodes)
    used = {i.lstrip("^") for n in pruned.node for i in n.input}
    used = {i if ":" in i else i + ":0" for i in used}
    input_map = {h: t for h, t in self._handles.items() if h in used}
    for name, value in feeds.items():
      tensor_name = signature_def.inputs[name].name
      dtype = tf.as_dtype(signature_def.inputs[name].dtype)
      input_map[tensor_name] = tf.convert_to_tensor(value, dtype=dtype)
    self._calls += 1
    outputs = tf.graph_util.import_graph_def(
        pruned, input_map=input_map, return_elements=output_tensors,
        name=f"{self._scope}_apply_{signature or DEFAULT_SIGNATURE}_{self._calls}")
    result = dict(zip(output_names, outputs))
    return _as_output(result, as_dict)

  def export(self, path, session):
    """Writes the module, with its variables' values in `session`, to the directory `path`."""
    values = session.run(dict(self._variable_map))
    write_module(path, self._spec.meta_graphs(), values)


def write_module(path, meta_graphs, variable_values):
  """Writes a module directory: `meta_graphs` (each with its tags and signatures) and the
  variables' values ({name in the module's graphs: array}), atomically."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  with model_dir.atomic_directory(path) as tmp:
    tf.io.gfile.makedirs(os.path.join(tmp, "assets"))
    with tf.Graph().as_default(), tf1.Session() as session:
      variables = {name: tf1.Variable(value, name="v", trainable=False)
                   for name, value in sorted(variable_values.items())}
      session.run(tf1.global_variables_initializer())
      tf1.train.Saver(variables).save(session, os.path.join(tmp, "variables", "variables"),
                                      write_meta_graph=False, write_state=False)
    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    for meta_graph in meta_graphs:
      saved_model.meta_graphs.add().CopyFrom(_without_saver(meta_graph))
    with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
      f.write(saved_model.SerializeToString())
    with open(os.path.join(tmp, MODULE_DEF_FILE), "wb") as f:
      f.write(MODULE_DEF_BYTES)


def _without_saver(meta_graph):
  # A module's variables are restored by name from variables/, as hub's modules are.
  copy = type(meta_graph)()
  copy.CopyFrom(meta_graph)
  copy.ClearField("saver_def")
  return copy


def _as_input_dict(inputs, names):
  if isinstance(inputs, dict):
    missing, extra = set(names) - set(inputs), set(inputs) - set(names)
    if missing or extra:
      raise TypeError(f"the signature takes inputs {sorted(names)}, got {sorted(inputs)}")
    return inputs
  if len(names) != 1:
    raise TypeError(f"the signature takes inputs {sorted(names)}: pass them as a dict")
  return {names[0]: inputs}


def _as_output(outputs, as_dict):
  if as_dict:
    return outputs
  if DEFAULT_SIGNATURE not in outputs:
    raise TypeError(f"the signature has outputs {sorted(outputs)} and none named 'default': "
                    "call it with as_dict=True")
  return outputs[DEFAULT_SIGNATURE]


@contextlib.contextmanager
def loaded_module(path, tags=None, freeze=False):
  """Yields (graph, session, signature_defs) of the module's tag set `tags`, loaded into a session
  of its own; with `freeze`, its variables are first converted to constants
  (lievae_tf.dlib.frozen_scoring says why)."""
  with tf.Graph().as_default() as graph:
    session = tf1.Session(graph=graph)
    try:
      meta_graph = tf1.saved_model.loader.load(session, sorted(tags or ()), path)
      signatures = dict(meta_graph.signature_def)
      if freeze:
        fetch_ops = sorted({_node_name(t.name) for s in signatures.values()
                            for t in s.outputs.values()})
        frozen = tf1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), fetch_ops)
        session.close()
        with tf.Graph().as_default() as graph:
          tf.graph_util.import_graph_def(frozen, name="")
        session = tf1.Session(graph=graph)
      yield graph, session, signatures
    finally:
      session.close()


@contextlib.contextmanager
def eval_function_for_module(spec, tags=None, freeze=False):
  """Yields `f(inputs, signature=..., as_dict=...)`, which evaluates a signature on numpy inputs.

  The module's tag set `tags` is loaded once (`loaded_module`), weights frozen with `freeze`.
  """
  path = spec if isinstance(spec, str) else None
  if path is None:
    raise TypeError("eval_function_for_module takes the path of a module directory")
  original_graph = tf1.get_default_graph()
  with loaded_module(path, tags, freeze) as (graph, session, signatures):
    callables = {}
    for name, signature_def in signatures.items():
      input_names = sorted(signature_def.inputs)
      feeds = [graph.get_tensor_by_name(signature_def.inputs[n].name) for n in input_names]
      fetches = {k: graph.get_tensor_by_name(v.name) for k, v in signature_def.outputs.items()}
      callables[name] = (input_names, feeds, session.make_callable(fetches, feeds))

    def evaluate(inputs=None, _sentinel=None, signature=None, as_dict=None):  # pylint: disable=invalid-name
      del _sentinel
      signature = signature or DEFAULT_SIGNATURE
      if signature not in callables:
        raise ValueError(f"the module has no signature {signature!r}; it has "
                         f"{sorted(callables)}")
      input_names, feeds, run = callables[signature]
      values = _as_input_dict(inputs, input_names)
      arrays = [np.asarray(values[n], dtype=t.dtype.as_numpy_dtype)
                for n, t in zip(input_names, feeds)]
      return _as_output(run(*arrays), as_dict)

    with original_graph.as_default():  # as hub's function leaves it
      yield evaluate
