"""Scoring with disentanglement_lib: the metric registry (`registry`), our own metrics as dlib
evaluation functions (`factor_leakage`) and their gin configs (`metric_configs/`)."""
