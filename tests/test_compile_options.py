"""swinv2_jax.compile_options: the eval/inference compiler options compile on this jaxlib, change
nothing but float32 rounding, and are empty off CPU."""
import jax
import jax.numpy as jnp
import numpy as np

from swinv2_jax import create_model
from swinv2_jax.compile_options import _accepted, inference_compiler_options


def test_inference_options_compile_and_keep_the_numbers():
    opts = inference_compiler_options()
    if jax.default_backend() == 'cpu' and _accepted('cpu', 'xla_cpu_experimental_ynn_fusion_type', ''):
        assert opts == {'xla_cpu_experimental_ynn_fusion_type': ''}
    model = create_model('swinv2_tiny_window8_256', embed_dim=16, depths=(1, 1), num_heads=(1, 2), img_size=64,
                         window_size=4, num_classes=10)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    ref = np.asarray(jax.jit(model.apply)(variables, x))
    out = np.asarray(jax.jit(model.apply, compiler_options=opts)(variables, x))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_no_options_off_cpu_or_for_unknown_flags():
    assert inference_compiler_options('gpu') == {}
    assert not _accepted('cpu', 'xla_cpu_no_such_option_anywhere', '1')
