"""Weights in and out.

  pytorch        load_torch_weights / export_torch_weights for every model (a row per model family)
  torch_layouts  PyTorch names and layouts (official, SimMIM encoder, timm, Hugging Face), in and out
  upernet        UperNet segmentation models: Hugging Face and mmsegmentation layouts, in and out
  simmim         SimMIM PyTorch checkpoints: the encoder plus mask token and decoder
  converted      the converted checkpoint format: an Orbax directory of variables + config.json
  transfer       window/resolution transfer of parameters (the one position-bias-table resize)
  tree_diff      the one missing / unexpected / mis-shaped comparison behind every loader's error
  cli            the converter command line (`python -m swinv2_jax.convert`)

Imports jax, flax and numpy (Orbax only in `converted`); torch and safetensors only inside the
functions that read or write their files. Nothing under `swinv2_jax.models` imports this package.
"""
