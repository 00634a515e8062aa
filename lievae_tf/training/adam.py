"""Adam with the epsilon where PyTorch puts it, for runs that follow the paper code's optimiser.

Keras' Adam folds the bias corrections into the step size and adds epsilon to the uncorrected
sqrt(v) ("epsilon hat" of Kingma & Ba's section 2):
    w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
PyTorch's `torch.optim.Adam`, which the paper code trains with, adds it to the corrected one:
    w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
Keras' update is PyTorch's with eps scaled by sqrt(1 - b2^t): about 32x larger at the first
step and still 2.2x at step 1,000 (b2 = 0.999), which matters where |gradient| is near eps.
"""

import tensorflow as tf

from lievae_tf.errors import UserError
from lievae_tf.keras2 import keras

EPSILON_PLACEMENTS = ("keras", "pytorch")


class PyTorchAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` that updates as `torch.optim.Adam` (amsgrad off, no weight decay).

  Same slot variables (`m`, `v`) as Keras' Adam, so checkpoints of either restore into the other.
  The bias corrections are computed in float64, as PyTorch computes them in Python floats: in
  float32, 1 - 0.999 is off by 1.3e-5 relative, which would show in the first steps.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.amsgrad:
      raise UserError("PyTorchAdam does not implement amsgrad; use the Keras epsilon placement.")

  _step_scalars = None  # this step's (float64 step size, sqrt of bias correction 2), in a graph

  def _bias_corrections(self):
    step = tf.cast(self.iterations + 1, tf.float64)
    bias_correction_1 = 1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), step)
    bias_correction_2 = 1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), step)
    return (tf.cast(self.learning_rate, tf.float64) / bias_correction_1,
            tf.sqrt(bias_correction_2))

  def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
    # The bias corrections once a step instead of once a variable (the same ops on the same
    # values: no number changes). Only inside a traced function: an eager value captured by a
    # variable's jit-compiled update (Keras' GPU default) would be frozen into its trace.
    self._step_scalars = self._bias_corrections() if tf.inside_function() else None
    try:
      return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
    finally:
      self._step_scalars = None

  def update_step(self, gradient, variable):
    # PyTorch's Adam has no sparse update: a sparse gradient is applied densely.
    gradient = tf.convert_to_tensor(gradient)
    dtype = variable.dtype
    step_size, bias_correction_2_sqrt = self._step_scalars or self._bias_corrections()
    step_size = tf.cast(step_size, dtype)
    bias_correction_2_sqrt = tf.cast(bias_correction_2_sqrt, dtype)

    index = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[index], self._velocities[index]
    # torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    m.assign_add((gradient - m) * (1.0 - self.beta_1))
    v.assign(v * self.beta_2 + tf.square(gradient) * (1.0 - self.beta_2))
    denominator = tf.sqrt(v) / bias_correction_2_sqrt + tf.cast(self.epsilon, dtype)
    variable.assign_sub(step_size * (m / denominator))


def make_adam(learning_rate, beta_1, beta_2, epsilon, epsilon_placement="keras"):
  """Keras' Adam, or `PyTorchAdam` for `epsilon_placement='pytorch'`."""
  if epsilon_placement not in EPSILON_PLACEMENTS:
    raise UserError(f"optimizer.epsilon_placement = {epsilon_placement!r} is not one of "
                    f"{EPSILON_PLACEMENTS}: 'pytorch' updates as torch.optim.Adam (the paper "
                    "code), 'keras' as keras.optimizers.Adam.")
  adam = PyTorchAdam if epsilon_placement == "pytorch" else keras.optimizers.Adam
  return adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
