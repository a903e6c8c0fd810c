"""SimMIM weights from and to PyTorch: official SimMIM and Hugging Face `Swinv2ForMaskedImageModeling`.

A SimMIM checkpoint is an encoder, a mask token and a decoder:

  this project (SimMIM)          official SimMIM               Hugging Face
  encoder/<encoder path>         encoder.<official name>       swinv2.<HF encoder name>
  encoder/mask_token [C]         encoder.mask_token [1, 1, C]  swinv2.embeddings.mask_token [1, 1, C]
  decoder/kernel [1, 1, I, O]    decoder.0.weight [O, I, 1, 1] decoder.0.weight
  decoder/bias                   decoder.0.bias                decoder.0.bias

The encoder names are `torch_layouts`' rules (older official checkpoints' `rpe_mlp` alias of
`cpb_mlp` included), so this module only adds the two SimMIM pieces. `load_simmim_weights` is for
continuing pre-training and needs all three parts; to fine-tune a classifier from a SimMIM
checkpoint use `load_torch_weights` / `init_from`, which take the encoder and leave out the mask
token and decoder.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from swinv2_jax.models.simmim import SimMIM
from swinv2_jax.weights import torch_layouts
from swinv2_jax.weights.tree_diff import diff_trees

log = logging.getLogger(__name__)

DECODER_NAMES = ('decoder.0.weight', 'decoder.0.bias')


def simmim_names(layout: str, hf_prefix: str = 'swinv2.') -> Dict[str, str]:
    """PyTorch names of the SimMIM-only parameters: {'mask_token', 'kernel', 'bias'}."""
    if layout == 'simmim':
        mask_token = 'encoder.mask_token'
    elif layout == 'hf':
        mask_token = hf_prefix + 'embeddings.mask_token'
    else:
        raise ValueError(f'a SimMIM checkpoint has the official SimMIM (encoder.*) or Hugging Face '
                         f'(swinv2.*) layout, not {layout!r}')
    return {'mask_token': mask_token, 'kernel': DECODER_NAMES[0], 'bias': DECODER_NAMES[1]}


def _layout(sd: Mapping[str, Any], layout: Optional[str]) -> Tuple[str, str]:
    layout, prefix = torch_layouts.resolve_layout(sd, layout)
    if layout not in ('simmim', 'hf'):
        raise ValueError(f'this state dict has the {layout} layout, which has no SimMIM mask token or decoder: '
                         f'load it with load_torch_weights (an encoder) and train the decoder from scratch')
    return layout, prefix


def _check_simmim_parts(sd: Mapping[str, np.ndarray], model: SimMIM, layout: str, names: Dict[str, str]) -> None:
    """Raises ValueError naming every missing or mis-shaped SimMIM-only key (the encoder's are
    `load_torch_weights`' to report)."""
    encoder = model.encoder
    c_last, out = encoder.num_features, model.stride ** 2 * model.in_chans
    want = {'mask_token': (1, 1, encoder.embed_dim), 'kernel': (out, c_last, 1, 1), 'bias': (out,)}
    expected = {names[k]: jax.ShapeDtypeStruct(shape, np.float32) for k, shape in want.items()}
    given = {n: sd[n] for n in expected if n in sd}
    token = given.get(names['mask_token'])
    if token is not None and token.size == encoder.embed_dim:  # any layout of C values is a mask token
        given[names['mask_token']] = token.reshape(want['mask_token'])
    diff = diff_trees(expected, given, given_word='checkpoint', expected_word='model')
    if not diff:
        return
    hint = ('a checkpoint without the mask token and decoder (a fine-tuned or classification one) '
            'can only initialise the encoder: load it with load_torch_weights or init_from'
            if diff.missing else
            f'the decoder maps {c_last} channels to stride {model.stride}^2 x {model.in_chans} '
            f'pixels: check the model name and the number of stages')
    raise ValueError(diff.message(f'the {layout}-layout SimMIM checkpoint does not match the model',
                                  [hint], per_name=True))


def load_simmim_weights(src, model: SimMIM, layout: Optional[str] = None) -> Dict[str, Any]:
    """Variables `{"params": {"encoder": ..., "decoder": ...}}` for `model` from a PyTorch SimMIM
    checkpoint (a path or a mapping; official SimMIM or Hugging Face names, detected when
    `layout` is None). Its img_size and windows may differ from the checkpoint's (the position
    bias is a function of the coordinates); the decoder's stride must match.

    Raises ValueError naming every missing or mis-shaped key.
    """
    sd = torch_layouts.read_state_dict(src)
    layout, prefix = _layout(sd, layout)
    names = simmim_names(layout, prefix)
    _check_simmim_parts(sd, model, layout, names)

    rest = {k: v for k, v in sd.items() if k not in names.values()}
    headless = model.encoder.clone(parent=None, use_mask_token=False, num_classes=0)
    params = dict(torch_layouts.load_torch_weights(rest, headless, layout=layout)['params'])
    params['mask_token'] = jnp.asarray(sd[names['mask_token']].reshape(-1), model.encoder.param_dtype)
    decoder = {'kernel': jnp.asarray(sd[names['kernel']].transpose(2, 3, 1, 0), model.param_dtype),
               'bias': jnp.asarray(sd[names['bias']], model.param_dtype)}
    log.info('loaded the %s-layout SimMIM encoder, mask token and decoder', layout)
    return {'params': {'encoder': params, 'decoder': decoder}}


def export_simmim_weights(variables: Mapping[str, Any], model: SimMIM, layout: str = 'simmim'
                          ) -> Dict[str, np.ndarray]:
    """A PyTorch state dict of a SimMIM model: official SimMIM names ('simmim', with the official
    buffers) or Hugging Face `Swinv2ForMaskedImageModeling` names ('hf'); both load strictly."""
    params = variables.get('params', variables)
    enc = {k: v for k, v in params['encoder'].items() if k != 'mask_token'}
    headless = model.encoder.clone(parent=None, use_mask_token=False, num_classes=0)
    sd = torch_layouts.export_torch_weights({'params': enc}, headless, layout=layout)
    names = simmim_names(layout)
    sd[names['mask_token']] = np.asarray(params['encoder']['mask_token'], np.float32).reshape(1, 1, -1)
    sd[names['kernel']] = np.ascontiguousarray(np.asarray(params['decoder']['kernel'], np.float32).transpose(3, 2, 0, 1))
    sd[names['bias']] = np.asarray(params['decoder']['bias'], np.float32)
    return sd


__all__ = ['export_simmim_weights', 'load_simmim_weights', 'simmim_names']
