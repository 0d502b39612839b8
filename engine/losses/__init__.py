"""Training losses as plain functions on (B, C, H, W) tensors in the models' [0, 1] scale.

One file per family; each function has a short docstring with its formula and the spec
section it follows.
"""
