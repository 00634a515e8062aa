"""Ops in one training step, uncompiled vs compiled by XLA: what a GPU would launch (docs/speed.md).

  source .venv/bin/activate
  python bench/step_ops.py                       # dSprites and 3DShapes settings, batch 256
  python bench/step_ops.py --json                # one JSON line
  python bench/step_ops.py --hlo_dir=/tmp/hlo    # also writes each compiled step's HLO text there

For each setting and `LieGroupVAE.expm` ('tf', 'fixed'), the step is `LieGroupVAE.train_step`
(the model, loss, gradients and PyTorchAdam update of lievae_train, as gin_configs/<setting>.gin
builds them) traced as a `tf.function` on one batch:

  graph:  its concrete function's graph, every function it calls counted too (the branches of each
          `If`, the cond and body of each `While`, each once), split into the ops that run a
          computation and those that do not (constants, identities, placeholders, no-ops,
          shape reads): uncompiled on a GPU each of the former is at least one kernel launch or
          host-side step; each `If` reads its predicate on the host and each `While` its
          condition once per iteration (a device-to-host copy that stalls the stream).
  hlo:    with `jit_compile=True` (only expm='fixed' compiles): the HLO module XLA compiles, from
          `experimental_get_compiler_ir` (one module = one compiled cluster, one executable launch),
          its instructions before optimisation, and after XLA's CPU optimisation its fusions and
          library calls (convolutions, matmuls, solves), i.e. what this CPU build runs as kernels;
          XLA:GPU fuses alike (no GPU here to print its own).
"""

import argparse
import collections
import json
import os
import re
import tempfile

import core

NON_COMPUTE = {"Const", "Identity", "IdentityN", "NoOp", "Placeholder", "_Arg", "_Retval",
               "Shape", "ShapeN", "Size", "Rank", "ReadVariableOp", "StopGradient"}
CONTROL_FLOW = {"If", "StatelessIf", "While", "StatelessWhile"}


def count_graph(graph_def):
  """{op type: count} over the graph and, once each, every function in its library."""
  counts = collections.Counter(node.op for node in graph_def.node)
  for function in graph_def.library.function:
    counts.update(node.op for node in function.node_def)
  return counts


def summarize_graph(counts):
  functions = {op for op in counts if op in ("PartitionedCall", "StatefulPartitionedCall")}
  compute = sum(n for op, n in counts.items() if op not in NON_COMPUTE | functions)
  return dict(all_ops=sum(counts.values()), compute_ops=compute,
              control_flow={op: counts[op] for op in sorted(CONTROL_FLOW) if counts[op]})


def summarize_hlo(hlo, optimized):
  """Instruction counts of HLO text: before, and after XLA's (CPU) optimisation."""
  def instructions(text):
    return [line for line in text.splitlines() if re.match(r"\s+(ROOT )?%?[\w.\-]+ = ", line)]

  def entry(text):  # the entry computation: what runs at top level, fusions as single kernels
    body = text[text.index("ENTRY"):]
    return instructions(body[:body.index("\n}") + 2])

  top = entry(optimized)
  kinds = collections.Counter()
  for line in top:
    # The opcode is the first lowercase word followed by "(" after "= " (shapes have none).
    match = re.search(r" = .*?\b([a-z][\w-]*)\(", line)
    kinds[match.group(1) if match else "?"] += 1
  launched = {k: n for k, n in kinds.items() if k not in (
      "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy-start", "copy-done")}
  return dict(hlo_modules=1, hlo_instructions=len(instructions(hlo)),
              optimized_entry_instructions=len(top), optimized_launched=sum(launched.values()),
              optimized_by_kind=dict(sorted(launched.items(), key=lambda kv: -kv[1])),
              conditionals=kinds.get("conditional", 0), whiles=kinds.get("while", 0))


def measure(setting, batch, expm, data_dir, hlo_dir=None):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  os.environ["DISENTANGLEMENT_LIB_DATA"] = data_dir
  built = core.build([core.gin_config(core.SETTINGS[setting]["gin"])],
                     [f"LieGroupVAE.expm = '{expm}'"])
  vae = built.vae
  vae.optimizer.build(vae.trainable_variables)
  images = tf.zeros([batch] + built.image_shape)
  result = dict(graph=summarize_graph(count_graph(
      tf.function(vae.train_step).get_concrete_function(images).graph.as_graph_def())))
  if expm == "fixed":
    compiled = tf.function(vae.train_step, jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(images)(stage="hlo")
    optimized = compiled.experimental_get_compiler_ir(images)(stage="optimized_hlo")
    result["xla"] = summarize_hlo(hlo, optimized)
    if hlo_dir:
      os.makedirs(hlo_dir, exist_ok=True)
      for stage, text in (("hlo", hlo), ("optimized_hlo", optimized)):
        with open(os.path.join(hlo_dir, f"{setting}_{stage}.txt"), "w") as f:
          f.write(text)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--settings", default="dsprites,shapes3d")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--hlo_dir", default=None)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  temporary = None if args.data_dir else tempfile.TemporaryDirectory(prefix="lievae_ops_")
  data_dir = args.data_dir or temporary.name
  everything = {}
  for setting in args.settings.split(","):
    core.write_data(data_dir, setting)
    for expm in ("tf", "fixed"):
      everything.setdefault(setting, {})[f"expm_{expm}"] = measure(setting, args.batch, expm,
                                                                   data_dir, args.hlo_dir)
  if args.json:
    print(json.dumps(everything))
    return
  for setting, by_expm in everything.items():
    print(f"\n{setting}, batch {args.batch}: LieGroupVAE.train_step")
    for name, r in by_expm.items():
      g = r["graph"]
      print(f"  {name:11s} uncompiled graph: {g['all_ops']} ops, {g['compute_ops']} computing; "
            f"control flow {g['control_flow'] or 'none'}")
      if "xla" in r:
        x = r["xla"]
        print(f"  {name:11s} jit_compile: {x['hlo_modules']} HLO module, {x['hlo_instructions']} "
              f"HLO instructions; optimised (CPU): {x['optimized_launched']} top-level kernels "
              f"({x['optimized_by_kind']}), {x['conditionals']} conditional, {x['whiles']} while")


if __name__ == "__main__":
  main()
