"""Training recipes for `train.py`: each module's `get_config(arg)` returns a ConfigDict.

`python train.py --config configs/NAME.py:ARG` loads one by path (ARG: a variant, `runlocal`,
key=value pairs; see `config_lib.parse_arg`). A recipe starts from `config_lib.base_config()`,
where every key is documented with its default, and states only what differs; the pieces several
recipes share live in `configs/common.py`. Recipes import each other and that module as
`from configs import ...`, which resolves with the repository root on sys.path: `python train.py`
from the root, and pytest (pyproject sets `pythonpath`).
"""
