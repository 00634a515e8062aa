"""Resident memory of a long `lievae_train` run: flat after warm-up, or a leak?

  source .venv/bin/activate
  python bench/memory_long_run.py                         # 20,000 steps at batch 64 (~45 min here)
  python bench/memory_long_run.py --steps 3000 --every 500  # a quick look

Runs the real `lievae_train` (the paper's dSprites model, gin_configs/dsprites.gin) in a child
process on a SYNTHETIC dSprites-format grid (lievae_make_data's default, 11,520 images), with
everything a real run does: a checkpoint, TensorBoard scalars and images every `--every` steps.
It samples the child's resident set size (VmRSS) each time a checkpoint appears, i.e. every
`--every` steps, and prints it; then the growth from the end of warm-up (`--warmup` steps: tracing,
first allocations, the allocator's pools) to the last sample. Figures go to bench/RESULTS.md.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import core


def latest_step(checkpoint_dir):
  state = os.path.join(checkpoint_dir, "checkpoint")
  if not os.path.isfile(state):
    return 0
  with open(state) as f:
    first = f.readline()  # model_checkpoint_path: "ckpt-N"
  try:
    return int(first.rsplit("-", 1)[1].strip().strip('"'))
  except (IndexError, ValueError):
    return 0  # written half-way: read it again at the next poll


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--every", type=int, default=1000, help="steps between samples")
  parser.add_argument("--warmup", type=int, default=2000, help="steps before the baseline")
  parser.add_argument("--work_dir", default=None, help="default: a temporary directory")
  args = parser.parse_args()

  work_dir = args.work_dir or tempfile.mkdtemp(prefix="lievae_memory_")
  data_dir, model_dir = os.path.join(work_dir, "data"), os.path.join(work_dir, "model")
  subprocess.run([core.command("lievae_make_data"), f"--output_dir={data_dir}"],
                 check=True, capture_output=True)
  env = dict(os.environ, DISENTANGLEMENT_LIB_DATA=data_dir)
  bindings = [f"model.training_steps = {args.steps}", f"model.batch_size = {args.batch_size}",
              f"training.checkpoint_every = {args.every}", "training.keep_checkpoints = 1",
              f"training.log_every = {min(100, args.every)}",
              f"training.image_every = {args.every}", "model.eval_steps = 2"]
  command = [core.command("lievae_train"), f"--model_dir={model_dir}", "--overwrite",
             f"--gin_config={core.gin_config('dsprites.gin')}"]
  command += [f"--gin_bindings={b}" for b in bindings]
  child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(work_dir, "train.log"), "w"))
  checkpoint_dir = os.path.join(model_dir, "tf_checkpoint")
  samples, started = {}, time.time()
  print(f"{'step':>7} {'RSS MB':>8} {'s':>7}", flush=True)
  while child.poll() is None:
    step = latest_step(checkpoint_dir)
    if step and step not in samples:
      samples[step] = core.memory_bytes("VmRSS", child.pid) / 2**20
      print(f"{step:>7} {samples[step]:>8.1f} {time.time() - started:>7.0f}", flush=True)
    time.sleep(0.2)
  if child.returncode:
    sys.exit(f"lievae_train failed ({child.returncode}); see {work_dir}/train.log")

  after_warmup = [s for s in sorted(samples) if s >= args.warmup]
  if len(after_warmup) < 2:
    sys.exit("too few samples after warm-up: raise --steps or lower --warmup")
  base, last = samples[after_warmup[0]], samples[after_warmup[-1]]
  peak = max(samples[s] for s in after_warmup)
  print(f"growth after warm-up (step {after_warmup[0]} -> {after_warmup[-1]}): "
        f"{100 * (last - base) / base:+.1f} % (peak {100 * (peak - base) / base:+.1f} %); "
        f"{len(samples)} samples, {args.steps * args.batch_size / (time.time() - started):.0f} "
        "img/s overall")


if __name__ == "__main__":
  main()
