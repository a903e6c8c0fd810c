"""Weights in and out: PyTorch layouts (official, timm, Hugging Face; classification and SimMIM),
the converted Orbax checkpoint format, and window/resolution transfer of parameters.

Imports jax, flax and numpy; torch and safetensors only inside the functions that read them.
"""
