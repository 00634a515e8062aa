"""Formats other code reads or writes: the TF-Hub module and results disentanglement_lib reads
(`export`, over `lievae_tf.dlib.tf1_hub`'s TF1 module layer) and the paper code's PyTorch checkpoints
(`torch_import`). A package of its own so that a wheel ships it (setuptools' package discovery
skips a directory without this file)."""
