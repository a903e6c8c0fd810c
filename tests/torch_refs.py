"""Helpers that build the PyTorch reference models (timm, Hugging Face) for the parity tests."""
from __future__ import annotations

import math

import numpy as np
import torch

import swinv2_jax


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Randomise what the official init leaves degenerate, so a parity test can fail on it.

    The res-post-norms start at zero (each block is the identity), q/v biases (V1: the qkv bias) at
    zero, V1's bias tables near zero and logit_scale at log(10) everywhere: a wrong norm placement,
    a missing bias or a wrong clamp would go unseen. Some logit scales are pushed past the clamp at log(100).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if ('norm' in name or 'layernorm' in name) and name.endswith('weight'):
                p.copy_(1.0 + 0.5 * r)
            elif ('norm' in name or 'layernorm' in name) and name.endswith('bias'):
                p.copy_(0.2 * r)
            elif name.endswith(('q_bias', 'v_bias', 'query.bias', 'value.bias')):
                p.copy_(0.2 * r)
            elif name.endswith(('qkv.bias', 'key.bias', 'q_proj.bias', 'k_proj.bias', 'v_proj.bias')):
                p.copy_(0.2 * r)  # Swin V1's plain qkv bias (zero at init): a missing key bias shows
            elif name.endswith('relative_position_bias_table'):
                p.copy_(r)  # Swin V1's table (normal 0.02 at init): large enough to matter
            elif name.endswith('logit_scale'):
                p.copy_(math.log(10.0) + 1.5 * r)
    return module


def randomize_bn_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """BatchNorm running statistics away from (0, 1), so that a wrong eps, a swapped mean/var or
    train-mode statistics in evaluation show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(0.5 * torch.randn(buf.shape, generator=g))
            elif name.endswith('running_var'):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    return module


def timm_model(name: str, **overrides) -> torch.nn.Module:
    """timm's model for a registered name (canonical timm names) with the same overrides."""
    import timm
    canonical = swinv2_jax.models.resolve_name(name)
    kw = dict(overrides)
    for k in ('dtype', 'param_dtype'):
        kw.pop(k, None)
    if 'pretrained_window_sizes' in kw:
        kw['pretrained_window_sizes'] = tuple(kw['pretrained_window_sizes'])
    return timm.create_model(canonical, pretrained=False, **kw).eval()


def hf_model(model: 'swinv2_jax.SwinTransformerV2') -> torch.nn.Module:
    """Hugging Face `Swinv2ForImageClassification` with the architecture of `model` (square only)."""
    from transformers import Swinv2Config, Swinv2ForImageClassification
    assert model.img_size[0] == model.img_size[1], 'Hugging Face SwinV2 takes square sizes'
    windows = {w for w in model.window_size}
    assert len(windows) == 1, 'Hugging Face SwinV2 has one window size for all stages'
    config = Swinv2Config(
        image_size=model.img_size[0], patch_size=model.patch_size, num_channels=model.in_chans,
        embed_dim=model.embed_dim, depths=list(model.depths), num_heads=list(model.num_heads),
        window_size=model.window_size[0][0], mlp_ratio=model.mlp_ratio,
        pretrained_window_sizes=[w[0] for w in model.pretrained_window_sizes],
        num_labels=max(model.num_classes, 1), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0, layer_norm_eps=1e-5, hidden_act='gelu', qkv_bias=True)
    return Swinv2ForImageClassification(config).eval()


def to_torch_state(sd: dict) -> dict:
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def assert_close(actual, expected, rtol: float = 1e-4, what: str = 'logits'):
    """Relative agreement to `rtol`, measured against the reference's largest magnitude."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-12)
    err = np.abs(actual - expected).max() / scale
    assert err <= rtol, f'{what}: max |difference| / max |reference| = {err:.3g} > {rtol}'
    return err
