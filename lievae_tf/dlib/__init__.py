"""The disentanglement_lib seam: everything that adapts disentanglement_lib 1.5 (dlib) and
tensorflow_hub to the two stacks, or speeds up dlib's own code, in one place. One job per file:

- `shims`: what dlib cannot run without on either stack, and `apply()`, which the environment's
  `.pth` hook and our commands call (docs/environment.md has the table);
- `tf1_hub`: the TF1 Hub module layer over SavedModel (tensorflow-hub 0.16 removed the TF1 API
  that dlib and our export use);
- `speedups`: the switch and hooks for the two speed-ups below (no shims: dlib runs without them);
- `frozen_scoring`: dlib's `evaluate` scoring through the module with its weights frozen;
- `lean_shapes3d`: dlib's `Shapes3D` holding uint8 instead of a ~24 GB float32 copy;
- `shared_loads`: one dataset and one module per metric-suite process, for dlib's `evaluate`.

Its place in the package's stages (docs/extending.md; tests/test_import_graph.py checks them):
above `data` (the lean Shapes3D reads the grid with `data.shapes3d`'s loaders), below `models`,
`interop` (the export writes through `tf1_hub`), `training` and `evaluation` (the suite's shared
loads). Importing this package imports nothing: the `.pth` hook runs in every process.
"""
