"""configs/: every recipe loads with each of its arguments, by package import and by path as
train.py loads it; recipes state only what differs from `config_lib.base_config()`; the digits
model is the registered one. No training and no TensorFlow: seconds on a CPU."""
import ast
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import configs
from configs import common
from swinv2_jax.models import ABLATIONS, create_model, model_config, model_fields
from swinv2_jax.train import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.dirname(os.path.abspath(configs.__file__))
HELPERS = ('__init__', 'common')

# Every recipe and the arguments it takes (each is also loaded with ',runlocal').
ARGS = {
    'digits': [None],
    'simmim_digits': [None],
    'simmim_digits_finetune': [None, 'scratch'],
    'imagenet1k_scratch': [None, 'tiny', 'small', 'base'],
    'imagenet1k_finetune': [None, 'base_256', 'base_384', 'large_256', 'large_384'],
    'imagenet22k_pretrain': [None, 'base', 'large'],
    'simmim_pretrain': [None, 'base'],
    'simmim_finetune': [None, 'base'],
    'digits_segmentation': [None],
    'ade20k_upernet': [None, 'swinv2_tiny', 'swinv2_base', 'swinv2_large', 'swin_base_v1'],
    'imagenet1k_ablation': [f'{row},size={size}' for row in ABLATIONS for size in ('tiny', 'small', 'base')],
}
CASES = [(name, arg) for name, args in ARGS.items() for a in args
         for arg in (a, ','.join(x for x in (a, 'runlocal') if x))]


def recipe_names():
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith('.py') and f[:-3] not in HELPERS)


def parse_like_train_py(path_and_arg, *overrides):
    """The config train.py would run: `--config=PATH:ARG --config.KEY=VALUE ...`, locked."""
    fv, argv = flags.FlagValues(), ['train.py', f'--config={path_and_arg}', *overrides]
    config_flags.DEFINE_config_file('config', flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


def load(name, arg):
    module = __import__(f'configs.{name}', fromlist=['get_config'])
    return module.get_config(arg)


def test_every_recipe_is_listed():
    assert sorted(ARGS) == recipe_names()


@pytest.mark.parametrize('name,arg', CASES)
def test_recipe_loads_and_its_model_builds(name, arg):
    c = load(name, arg)
    base = config_lib.base_config()
    assert set(base) <= set(c), f'{name}:{arg} dropped keys of base_config'
    assert set(base.aug) == set(c.aug) and set(base.optim) == set(c.optim)
    if c.objective == 'simmim':
        assert set(c.simmim) == set(config_lib.base_simmim())
    if c.objective == 'segmentation':
        assert set(c.seg) == set(config_lib.base_seg())
    # the model name and overrides resolve (building the module initialises nothing)
    create_model(c.model, **{'num_classes': 10, **config_lib.as_overrides(c)})


@pytest.mark.parametrize('name', ARGS)
def test_recipe_loads_by_path_as_train_py_does(name):
    """train.py loads `configs/NAME.py:ARG` by path through config_flags, with the config locked;
    the recipe's `from configs import ...` resolves from the repository root."""
    arg = ','.join(x for x in (ARGS[name][0], 'runlocal') if x)
    c = parse_like_train_py(f'{os.path.join(CONFIG_DIR, name)}.py:{arg}', '--config.seed=3')
    assert c.to_dict() == {**load(name, arg).to_dict(), 'seed': 3}


def test_unknown_variants_fail_loudly():
    for name in ('imagenet1k_scratch', 'imagenet1k_finetune', 'imagenet22k_pretrain', 'simmim_pretrain',
                 'simmim_finetune'):
        with pytest.raises(ValueError, match=f'{name}: variant .huge.; choose one of'):
            load(name, 'huge')
    with pytest.raises(ValueError, match='row .table99.; choose one of'):
        load('imagenet1k_ablation', 'table99')
    with pytest.raises(ValueError, match='the only one is scratch'):
        load('simmim_digits_finetune', 'huge')
    with pytest.raises(ValueError, match='unknown config argument'):
        load('digits', 'lr=1.0')


def test_digits_model_is_the_registered_one():
    """The digits recipes name `swinv2_digits_window4_32`, and the geometry they list (so that the
    command line can change it) is that model's own: the overrides build the same model."""
    registered = model_config(common.DIGITS_MODEL)
    for key, value in common.DIGITS_MODEL_OVERRIDES.items():
        assert registered.get(key, 4 if key == 'patch_size' else None) == value, key
    for name in ('digits', 'simmim_digits', 'simmim_digits_finetune'):
        c = load(name, None)
        assert c.model == common.DIGITS_MODEL
        built = create_model(c.model, num_classes=10, **config_lib.as_overrides(c))
        assert model_fields(built) == model_fields(create_model(common.DIGITS_MODEL))


def test_digits_model_keys_take_command_line_overrides():
    """train.py locks the config: the digits geometry is overridable because the recipe lists it."""
    c = parse_like_train_py(f'{os.path.join(CONFIG_DIR, "digits.py")}:runlocal',
                            '--config.model_overrides.embed_dim=12', '--config.model_overrides.depths=(1,1)')
    assert c.model_overrides.embed_dim == 12 and tuple(c.model_overrides.depths) == (1, 1)


# ----------------------------------------------------------------------------------------------
# How the recipes are written
# ----------------------------------------------------------------------------------------------

def _sources():
    for f in sorted(os.listdir(CONFIG_DIR)):
        if f.endswith('.py'):
            with open(os.path.join(CONFIG_DIR, f)) as fh:
                yield f, fh.read()


def test_configs_import_siblings_as_a_package():
    for f, text in _sources():
        assert 'spec_from_file_location' not in text and 'importlib' not in text, f


def _constant(node):
    """The value of an expression made of literals and arithmetic only; None otherwise."""
    if any(isinstance(n, (ast.Name, ast.Call, ast.Attribute, ast.Subscript)) for n in ast.walk(node)):
        return None
    return eval(compile(ast.Expression(node), '<config>', 'eval'))  # literals and operators only


def _config_path(target):
    """`c.optim.lr` -> ('optim', 'lr'); None for a target that is not under the config `c`."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    return tuple(reversed(parts)) if isinstance(target, ast.Name) and target.id == 'c' and parts else None


def test_recipes_do_not_restate_base_values():
    """A recipe's unconditional `c.KEY = constant` must change KEY: restating the base value hides
    what the recipe changes and keeps an old default alive when the base changes. (Statements
    under `if`, e.g. the runlocal branches, may set a value back; `*runlocal` helpers likewise.)"""
    base = config_lib.base_config()
    base.simmim = config_lib.base_simmim()
    found = []
    for f, text in _sources():
        for func in ast.walk(ast.parse(text)):
            if not isinstance(func, ast.FunctionDef) or 'runlocal' in func.name:
                continue
            for stmt in func.body:           # top level of the function only
                if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
                    continue
                path = _config_path(stmt.targets[0])
                value = _constant(stmt.value)
                if path is None or value is None:
                    continue
                node = base
                for key in path:
                    node = node.get(key) if hasattr(node, 'get') else None
                if node is not None and node == value:
                    found.append(f'{f}:{stmt.lineno}: c.{".".join(path)} = {value!r} is the base value')
    assert not found, '\n'.join(found)


def test_loading_every_config_imports_no_tensorflow():
    code = ('import sys\n'
            f'names = {recipe_names()!r}\n'
            'for n in names: __import__("configs." + n, fromlist=["get_config"]).get_config(None if n != '
            '"imagenet1k_ablation" else "table1_parameterized")\n'
            'assert "tensorflow" not in sys.modules, "a config imported TensorFlow"\n')
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
