"""Scoring with disentanglement_lib: the metric registry (`registry`), our own metrics as dlib
evaluation functions (`factor_leakage`; the paper code's protocol in `paper_protocol`, on the
array cores of `paper_metrics`) and their gin configs (`metric_configs/`)."""
