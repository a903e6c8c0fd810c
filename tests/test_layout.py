"""The package's shape: no import cycles, the model package free of TensorFlow and torch, and
files and functions of a size a reader takes in (the limits the layout was designed to)."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'swinv2_jax'
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 100


def _modules():
    """{dotted module name: path} for every file of the package (a package is its __init__)."""
    out = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def _imported(tree: ast.AST, modules) -> set:
    """The package's modules a file imports anywhere (function-level imports too: a lazy import
    that dodges a cycle is still one)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
                break
    return found


def _graph():
    modules = _modules()
    return {name: _imported(ast.parse(path.read_text()), modules) for name, path in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ importing its own submodules is how packages export names, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + '.') and m != name}
    cycle = _cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_model_package_imports_no_tensorflow_or_torch():
    for path in (PACKAGE / 'models').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                assert name.split('.')[0] not in ('tensorflow', 'tensorflow_datasets', 'torch'), \
                    f'{path.name} imports {name}'


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_readable(path):
    source = path.read_text()
    assert source.count('\n') <= MAX_FILE_LINES, f'{path.name}: {source.count(chr(10))} lines; split it by role'
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f'{path.name}:{node.lineno} {node.name} is {length} lines'
