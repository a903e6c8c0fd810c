"""Logit parity with timm and Hugging Face (float32, random weights, zero-initialised norms randomised).

For each configuration: timm's model is randomised, its state dict is converted with
`load_torch_weights` and our logits are compared with timm's; our variables are then exported to
the Hugging Face layout, loaded with `strict=True` into `Swinv2ForImageClassification`, and its
logits are compared with ours; finally the HF state dict is converted back and must give the
very same parameters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

import swinv2_jax
from torch_refs import assert_close, hf_model, nchw, randomize_, timm_model, to_torch_state

CASES = {
    'tiny_w8_256': ('swinv2_tiny_window8_256', {}, 2),
    'tiny_w16_256': ('swinv2_tiny_window16_256', {}, 2),
    # pretrained windows (12, 12, 12, 6): the CPB coordinates pass +-1 (window transfer)
    'base_w12to24_384': ('swinv2_base_window12to24_192to384', {}, 1),
    # reduced depth at a size no variant has; window 10 clipped in the last stage (10x10 map),
    # with pretrained windows so the 12->10 normalisation is exercised too
    'reduced_320_w10': ('swinv2_small_window16_256',
                        dict(depths=(1, 2, 3, 1), img_size=320, window_size=10,
                             pretrained_window_sizes=(8, 8, 8, 4), num_classes=37), 2),
}


@pytest.fixture(scope='module', params=list(CASES))
def case(request):
    name, overrides, batch = CASES[request.param]
    torch.manual_seed(0)
    ref = randomize_(timm_model(name, **overrides), seed=1)
    model = swinv2_jax.create_model(name, **overrides)
    x = np.random.RandomState(0).randn(batch, *model.img_size, 3).astype(np.float32)
    with torch.no_grad():
        ref_logits = ref(nchw(x)).numpy()
    variables = swinv2_jax.load_torch_weights(ref.state_dict(), model)
    logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x)))
    return dict(name=name, overrides=overrides, model=model, variables=variables, x=x,
                ref_logits=ref_logits, logits=logits)


def test_logits_match_timm(case):
    assert np.isfinite(case['logits']).all()
    assert_close(case['logits'], case['ref_logits'], 1e-4)


def test_logits_match_hugging_face(case):
    model, variables = case['model'], case['variables']
    hf = hf_model(model)
    hf.load_state_dict(to_torch_state(swinv2_jax.export_torch_weights(variables, model, 'hf')), strict=True)
    with torch.no_grad():
        hf_logits = hf(pixel_values=nchw(case['x'])).logits.numpy()
    assert_close(case['logits'], hf_logits, 1e-4)

    # and back: the Hugging Face state dict converts to the same parameters, bit for bit
    again = swinv2_jax.load_torch_weights(hf.state_dict(), model)
    a = traverse_util.flatten_dict(variables['params'])
    b = traverse_util.flatten_dict(again['params'])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg='/'.join(k))


def test_timm_export_loads_strictly_and_round_trips(case):
    model, variables = case['model'], case['variables']
    sd = swinv2_jax.export_torch_weights(variables, model, 'timm')
    fresh = timm_model(case['name'], **case['overrides'])
    fresh.load_state_dict(to_torch_state(sd), strict=True)
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(nchw(case['x'])).numpy(), case['ref_logits'])
    again = traverse_util.flatten_dict(swinv2_jax.load_torch_weights(sd, model)['params'])
    for k, v in traverse_util.flatten_dict(variables['params']).items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(again[k]), err_msg='/'.join(k))
