"""Models: classifiers (`lorasec.models.classifier`), causal LMs (`lorasec.models.causal`), greedy generation
(`lorasec.models.generate`) and the safetensors-only weight rules (`lorasec.models.weights`).

Empty on purpose: importing `lorasec.models.weights` to check a path must not import torch or transformers.
"""
