"""The memorization arm (paper 2, arXiv 2506.20856): causal-LM fine-tuning, extraction, canaries, MIA."""
