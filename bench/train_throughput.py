"""Training images/s: lievae_tf's step against the paper code's step, side by side in one run.

  source .venv/bin/activate
  python bench/train_throughput.py                        # dSprites and 3DShapes settings, batch 256
  python bench/train_throughput.py --only lievae --json   # one JSON line, lievae alone
  python bench/train_throughput.py --only lievae,lievae_bf16 --json   # {side: {setting: ...}}
  python bench/train_throughput.py --sides lievae,lievae_xla,lievae_tuned_malloc,paper
  python bench/train_throughput.py --sides lievae,lievae_fixed_expm,lievae_xla,lievae_bf16,lievae_bf16_fixed_expm,lievae_bf16_xla --no_flops
  python bench/train_throughput.py --batch_sizes 64,128,256,512,1024 --sides lievae,paper

Each side runs in its own warm worker process (TF's and torch's thread pools, and the allocator
settings of a side, must not leak into another), and the coordinator runs them in turn, round after
round, so that load from elsewhere on the machine hits every side alike. Every side uses the same 2
threads. Warm-up steps (tracing, first allocations) are excluded; medians and min/max of the rounds
are printed.

Sides:
  lievae               the real `LieGroupVAE.train_step` through `fit` with lievae_train's per-step
                       callbacks, fed by the real input pipeline (`data.make_input_fn`) from an
                       in-memory dataset written in the real file format (a small SYNTHETIC grid)
  paper                `torch_reference.PaperTrainStep`: the paper code's step as published (three
                       decoder passes, PyTorch Adam), torch 2.13 CPU, glibc malloc as shipped
  paper_tuned_malloc   the same with glibc told not to return large blocks to the OS every step
                       (as shipped, 20-35 % of the paper step's CPU time is page faults)
  paper_one_decode     the paper code's model decoding only the pass the loss needs (what lievae
                       computes), to separate the arithmetic saved from the framework
  lievae_tuned_malloc, lievae_inter_op_1, lievae_onednn_off: lievae with one lever changed (the
                       tuned malloc; inter-op parallelism 1; oneDNN off), each kept or dropped by
                       what it measured (bench/RESULTS.md)
  lievae_fixed_expm    lievae with `LieGroupVAE.expm = 'fixed'` (uncompiled)
  lievae_xla           lievae with `LieGroupVAE.expm = 'fixed'` and `training.jit_compile = True`
                       (the whole step compiled by XLA)
  lievae_xla_tf_expm   `training.jit_compile = True` with the default expm: refused (a UserError)
  lievae_bf16          lievae with `training.precision = 'mixed_bfloat16'` (opt-in)
  lievae_bf16_fixed_expm, lievae_bf16_xla: the same two expm settings under mixed_bfloat16
  lievae_bf16_onednn_off  mixed_bfloat16 on TF's fallback kernels (what a CPU without AVX-512 runs);
                       beside lievae_onednn_off, its float32 counterpart

FLOPs per step are counted by torch's FlopCounterMode on the reference model (forward + backward of
the step's arithmetic; lievae computes the same arithmetic as `paper_one_decode`), and set against a
float32 matmul peak measured in the same run.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

import core

MALLOC_TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736",
                "MALLOC_TOP_PAD_": "1073741824"}
FIXED_EXPM = "LieGroupVAE.expm = 'fixed'"
XLA = "training.jit_compile = True"
BF16 = "training.precision = 'mixed_bfloat16'"

# name -> (worker kind, extra environment, worker options)
SIDES = {
    "lievae": ("lievae", {}, {}),
    "paper": ("paper", {}, {}),
    "paper_tuned_malloc": ("paper", MALLOC_TUNED, {}),
    "paper_one_decode": ("paper", {}, {"one_decode": True}),
    "lievae_fixed_expm": ("lievae", {}, {"bindings": [FIXED_EXPM]}),
    "lievae_xla": ("lievae", {}, {"bindings": [FIXED_EXPM, XLA]}),
    "lievae_xla_tf_expm": ("lievae", {}, {"bindings": [XLA]}),
    "lievae_tuned_malloc": ("lievae", MALLOC_TUNED, {}),
    "lievae_inter_op_1": ("lievae", {}, {"inter_op": 1}),
    "lievae_onednn_off": ("lievae", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "lievae_bf16": ("lievae", {}, {"bindings": [BF16]}),
    "lievae_bf16_onednn_off": ("lievae", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {"bindings": [BF16]}),
    "lievae_bf16_fixed_expm": ("lievae", {}, {"bindings": [BF16, FIXED_EXPM]}),
    "lievae_bf16_xla": ("lievae", {}, {"bindings": [BF16, FIXED_EXPM, XLA]}),
}
SETTINGS = core.SETTINGS


# The workers.


def _load_images(path):
  """The grid as float32 NCHW in [0, 1], read as the file format stores it."""
  if path.endswith(".h5"):
    import h5py  # pylint: disable=g-import-not-at-top
    with h5py.File(path, "r") as h5:
      images = h5["images"][()].astype(np.float32) / 255.0
  else:
    with np.load(path) as npz:
      images = npz["imgs"].astype(np.float32)[..., None]
  return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _matmul_peak(matmul, size=2048, repeats=8, rounds=5):
  """Best GFLOP/s of `repeats` float32 (size x size) matmuls, over `rounds`."""
  best = 0.0
  for _ in range(rounds + 1):  # the first round warms up
    start = time.perf_counter()
    matmul(repeats)
    best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
  return best


def lievae_worker(setting, batch, data_dir, bindings=(), inter_op=None):
  """Serves `run N` (seconds for N training steps), `peak` and `expm` on stdin."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lievae_tf.keras2 import keras  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(core.THREADS)
  tf.config.threading.set_inter_op_parallelism_threads(inter_op or core.THREADS)
  from lievae_tf.training import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
  from lievae_tf.training import devices  # pylint: disable=g-import-not-at-top

  os.environ["DISENTANGLEMENT_LIB_DATA"] = data_dir
  built = core.build([core.gin_config(SETTINGS[setting]["gin"])], bindings)
  vae, dataset = built.vae, core.input_dataset(built, batch)
  precision, jit_compile = built.options["precision"], built.options["jit_compile"]
  # lievae_train's per-step callbacks (the progress bar writes to the worker's null stderr).
  callbacks = [callbacks_lib.StopOnNonFiniteLoss(),
               callbacks_lib.ScalarLogger(tf.summary.create_noop_writer(), 100),
               callbacks_lib.ProgressBar(10**9, 0, 100, batch)]

  step_ends = []
  clock = keras.callbacks.LambdaCallback(
      on_train_batch_end=lambda batch, logs: step_ends.append(time.perf_counter()))

  def run(steps):
    # Timed from the end of the first step to the end of the last, inside one `fit`: each `fit`
    # call costs up to seconds of set-up and teardown that a training run pays once, not per step.
    step_ends.clear()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0,
            callbacks=callbacks + [clock])
    return step_ends[-1] - step_ends[0]

  a = tf.random.normal([2048, 2048])

  @tf.function
  def matmuls(n):
    total = tf.zeros([])
    for _ in tf.range(n):
      total += tf.reduce_sum(tf.matmul(a, a)[:1, :1])
    return total

  matrix_size = int(round(sum(vae.subgroup_sizes) ** 0.5))

  def expm_ms():
    """ms of the side's expm forward + backward on a batch of the model's matrices, by norm
    (compiled by XLA on the jit_compile sides)."""
    timings = {}
    for norm in (1.0, 20.0):  # the Frobenius norms seen from initialisation to late training
      algebra = tf.random.normal([batch, matrix_size, matrix_size])
      algebra = tf.Variable(algebra * norm / tf.norm(algebra, axis=[1, 2], keepdims=True))

      @tf.function(jit_compile=jit_compile)
      def forward_backward():
        with tf.GradientTape() as tape:
          total = tf.reduce_sum(vae.exp_map.expm(algebra))
        return tape.gradient(total, algebra)

      forward_backward()
      durations = []
      for _ in range(10):
        start = time.perf_counter()
        forward_backward().numpy()
        durations.append(time.perf_counter() - start)
      timings[f"norm_{norm:g}"] = 1e3 * statistics.median(durations)
    return timings

  # What lievae_train's device line says: oneDNN's bfloat16 kernels or the slow fallback.
  facts = ({"bfloat16_kernels": devices.bfloat16_kernels(built.strategy)}
           if precision == "mixed_bfloat16" else {})
  core.serve({"run": run, "peak": lambda: _matmul_peak(lambda n: matmuls(tf.constant(n)).numpy()),
              "expm": expm_ms}, facts)


def paper_worker(setting, batch, data_dir, one_decode=False):
  """Serves `run N`, `peak` and `flops` on stdin, for the paper code's step in PyTorch."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(core.THREADS)
  torch_reference = core.torch_reference()

  config = _gin_model_config(setting)
  images = torch.from_numpy(_load_images(core.write_data(data_dir, setting)))
  torch.manual_seed(0)
  model = torch_reference.LieGroupVAE(
      subgroup_sizes_ls=config["subgroup_sizes"], subspace_sizes_ls=config["subspace_sizes"],
      nc=images.shape[1], lie_alg_init_scale=config["lie_alg_init_scale"],
      hy_hes=config["hy_hes"], hy_rec=config["hy_rec"], hy_commute=config["hy_commute"],
      forward_eg_prob=config["forward_eg_prob"], recons_loss_type=config["recons_loss_type"],
      beta=config["beta"])
  step = torch_reference.PaperTrainStep(model, seed=0)
  rng = np.random.default_rng(0)
  paper_loss_terms = model.loss_terms
  if one_decode:
    model.loss_terms = lambda *args, **kwargs: paper_loss_terms(
        *args, **{**kwargs, "decode_all": False})

  def run(steps):
    # The batch is gathered like a DataLoader's before the clock starts for the step itself.
    elapsed = 0.0
    for _ in range(steps):
      batch_images = images[torch.from_numpy(rng.integers(0, len(images), batch))]
      start = time.perf_counter()
      step(batch_images)
      elapsed += time.perf_counter() - start
    return elapsed

  def flops():
    from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
    counts = {}
    for name, decode_all in (("paper_step", True), ("one_decode_step", False)):
      with flop_counter.FlopCounterMode(display=False) as counter:
        noise = torch.zeros(batch, sum(config["subspace_sizes"]))
        terms = paper_loss_terms(images[:batch], noise, decode_all=decode_all)
        terms["loss"].backward()
      model.zero_grad()
      counts[name] = counter.get_total_flops()
    return counts

  a = torch.randn(2048, 2048)

  def matmuls(n):
    for _ in range(n):
      torch.mm(a, a)

  core.serve({"run": run, "peak": lambda: _matmul_peak(matmuls), "flops": flops})


def _gin_model_config(setting):
  """The LieGroupVAE settings of gin_configs/<setting>.gin, read by gin itself."""
  import gin  # pylint: disable=g-import-not-at-top
  from lievae_tf import models, training  # pylint: disable=g-import-not-at-top
  training.parse_gin([core.gin_config(SETTINGS[setting]["gin"])])
  config = models.LieGroupVAE(num_channels=1).get_config()
  gin.clear_config()
  return config


# The coordinator.


def start_worker(side, setting, batch, data_dir):
  """One side's warm worker process for one setting and batch size."""
  kind, env, options = SIDES[side]
  return core.Worker(side, [os.path.abspath(__file__), "--worker", kind, "--setting", setting,
                            "--batch", str(batch), "--data_dir", data_dir,
                            "--worker_options", json.dumps(options)], env)


def measure(setting, batch, sides, args):
  """Interleaved rounds of every side on one setting: {side: {images_per_s, min, max, ...}}."""
  steps = max(3, args.images_per_round // batch)
  started = [start_worker(side, setting, batch, args.data_dir) for side in sides]
  workers = list(started)
  failed = {}
  facts = {}
  try:
    for worker in list(workers):
      try:
        facts[worker.name] = worker.ready()  # its model is built
        worker.ask("run", args.warmup_steps)
      except core.WorkerDied as e:  # e.g. a lever that does not compile: report it, go on
        failed[worker.name] = dict(failed=str(e)[:300])
        workers.remove(worker)
    sides = [worker.name for worker in workers]
    rates = {side: [] for side in sides}
    for _ in range(args.rounds):
      for worker in workers:
        rates[worker.name].append(steps * batch / worker.ask("run", steps))
    results = {side: dict(images_per_s=statistics.median(r), min=min(r), max=max(r),
                          rounds=len(r), steps_per_round=steps, **facts[side])
               for side, r in rates.items()}
    if args.flops:
      for worker in workers:
        results[worker.name]["matmul_peak_gflops"] = worker.ask("peak")
        expm = worker.ask("expm")
        if expm:
          results[worker.name]["expm_ms"] = expm
      counter = next((w for w in workers if SIDES[w.name][0] == "paper"), None)
      if counter:
        counts = counter.ask("flops")
        for side in sides:
          is_paper_step = SIDES[side][0] == "paper" and not SIDES[side][2].get("one_decode")
          per_step = counts["paper_step" if is_paper_step else "one_decode_step"]
          results[side]["gflop_per_step"] = per_step / 1e9
          results[side]["gflops"] = per_step / 1e9 * results[side]["images_per_s"] / batch
    return {**results, **failed}
  finally:
    for worker in started:
      worker.close()


def print_table(setting, batch, results, baseline):
  peak = max((r.get("matmul_peak_gflops", 0) for r in results.values()), default=0)
  print(f"\n{setting}, batch {batch}" + (f" (float32 matmul peak {peak:.0f} GFLOP/s)" if peak else ""))
  print(f"  {'side':22s} {'img/s median':>12s} {'min':>7s} {'max':>7s} {'vs ' + baseline:>14s}"
        f" {'GFLOP/step':>10s} {'GFLOP/s':>8s} {'of peak':>7s}")
  base = results.get(baseline, {}).get("images_per_s")
  for side, r in results.items():
    if "failed" in r:
      print(f"  {side:22s} FAILED: {r['failed']}")
      continue
    ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
    flops = (f"{r['gflop_per_step']:10.1f} {r['gflops']:8.1f} {r['gflops'] / peak:7.0%}"
             if "gflops" in r and peak else f"{'-':>10s} {'-':>8s} {'-':>7s}")
    kernels = f"  (bfloat16 on {r['bfloat16_kernels']} kernels)" if "bfloat16_kernels" in r else ""
    print(f"  {side:22s} {r['images_per_s']:12.0f} {r['min']:7.0f} {r['max']:7.0f} {ratio:>14s} "
          f"{flops}{kernels}")
  for side, r in results.items():
    if "expm_ms" in r:
      step_ms = 1e3 * batch / r["images_per_s"]
      shares = ", ".join(f"{ms:.1f} ms at Frobenius {norm.split('_')[1]} ({ms / step_ms:.1%})"
                         for norm, ms in r["expm_ms"].items())
      print(f"  {side}: expm forward+backward of {batch} matrices: {shares} of its "
            f"{step_ms:.0f} ms step")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--settings", default="dsprites,shapes3d")
  parser.add_argument("--sides", default="lievae,paper,paper_tuned_malloc",
                      help=f"comma-separated, from: {', '.join(SIDES)}")
  parser.add_argument("--only", help="sides without the FLOP count, e.g. lievae or "
                      "lievae,lievae_bf16; same as --sides=SIDES --no_flops")
  parser.add_argument("--batch_sizes", default="256")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--images_per_round", type=int, default=2560,
                      help="steps per round = this / batch (at least 3)")
  parser.add_argument("--warmup_steps", type=int, default=5)
  parser.add_argument("--no_flops", dest="flops", action="store_false",
                      help="skip the FLOP count and the matmul peak")
  parser.add_argument("--data_dir", help="where the synthetic grids are written (default: a "
                      "temporary directory)")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON line: {setting: {batch: {side: ...}}}; with --only, "
                      "one side: {setting: {'images_per_s': ...}}, several: {side: {setting: "
                      "...}}")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--setting", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--worker_options", default="{}", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    serve = {"lievae": lievae_worker, "paper": paper_worker}[args.worker]
    serve(args.setting, args.batch, args.data_dir, **json.loads(args.worker_options))
    return

  sides = (args.only or args.sides).split(",")
  unknown = [s for s in sides if s not in SIDES]
  settings = args.settings.split(",")
  if unknown or not set(settings) <= set(SETTINGS):
    parser.error(f"unknown side or setting {unknown or settings}: sides are {', '.join(SIDES)}; "
                 f"settings are {', '.join(SETTINGS)}")
  if args.only:
    args.flops = False
  temporary = None
  if not args.data_dir:
    temporary = tempfile.TemporaryDirectory(prefix="lievae_bench_")
    args.data_dir = temporary.name
  for setting in settings:  # written once, before any clock runs
    core.write_data(args.data_dir, setting)

  baseline = "paper" if "paper" in sides else sides[0]
  everything = {}
  for setting in settings:
    for batch in (int(b) for b in args.batch_sizes.split(",")):
      results = measure(setting, batch, sides, args)
      everything.setdefault(setting, {})[batch] = results
      if not args.json:
        print_table(setting, batch, results, baseline)
  if args.json:
    if args.only:
      def images_per_s(setting, side):
        result = next(iter(everything[setting].values()))[side]
        if "failed" in result:  # e.g. bfloat16 where the CPU has no bfloat16 convolution
          return {"failed": result["failed"]}
        kernels = {k: result[k] for k in ("bfloat16_kernels",) if k in result}
        return {"images_per_s": round(result["images_per_s"], 1), **kernels}
      if len(sides) == 1:  # {setting: {images_per_s}}
        print(json.dumps({s: images_per_s(s, sides[0]) for s in settings}))
      else:  # {side: {setting: {images_per_s}}}, sides measured in the same interleaved rounds
        print(json.dumps({side: {s: images_per_s(s, side) for s in settings} for side in sides}))
    else:
      print(json.dumps(everything))
  else:
    grids = ", ".join(f"{s} {SETTINGS[s]['factor_sizes']}" for s in settings)
    print(f"\n{core.THREADS} threads per side; {args.rounds} interleaved rounds of "
          f"{args.images_per_round} images after {args.warmup_steps} warm-up steps; "
          f"synthetic grids: {grids}.")
  if temporary:
    temporary.cleanup()


if __name__ == "__main__":
  main()
