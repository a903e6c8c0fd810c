r"""The paper's ablation rows (Tables 1, 6 and 7) with the ImageNet-1K from-scratch recipe (A1).

  python train.py --workdir W --config configs/imagenet1k_ablation.py:table1_parameterized
  python train.py --workdir W --config configs/imagenet1k_ablation.py:table6_res_post_norm,size=small
  python train.py --workdir W --config configs/imagenet1k_ablation.py:table1_linear_cpb,runlocal  # tests

A row is `swinv2_jax.models.ABLATIONS[row]` on top of `imagenet1k_scratch.py`'s recipe: Table 1
and 7 rows on SwinV2 (256, window 8), Table 6 rows on Swin V1 (224, window 7, the Swin V1 model
of that size). Every switch is written into `config.model_overrides`, so any of them can also be
changed from the command line (`--config.model_overrides.attention=dot`).
"""
from configs import common, imagenet1k_scratch
from swinv2_jax.models import ABLATIONS
from swinv2_jax.models.swin_transformer_v2 import SWIN_V1, SWITCHES
from swinv2_jax.train import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, size='tiny')
    row = arg.variant
    common.pick('imagenet1k_ablation', ABLATIONS, row, what='row')
    c = imagenet1k_scratch.get_config(arg.size)
    if row.startswith('table6'):
        c.model = f'swin_{arg.size}_patch4_window7_224'
        switches = dict(SWIN_V1)
    else:
        switches = {k: v[0] for k, v in SWITCHES.items()}
    switches.update(ABLATIONS[row])
    c.model_overrides.update(switches)
    if arg.runlocal:
        config_lib.runlocal(c)
    return c
