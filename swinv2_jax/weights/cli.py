"""The converter's command line, `python -m swinv2_jax.convert` (see `--help`).

  python -m swinv2_jax.convert SRC --model NAME --out DIR        # PyTorch -> Orbax + config
  python -m swinv2_jax.convert DIR --to-torch --layout timm --out F.safetensors

Errors a user can fix (a missing file, a mismatched checkpoint, an existing output) end the
command with one `error:` line and exit status 1, never a traceback; nothing is left half written.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from swinv2_jax.models import SwinTransformerV2, UperNet, registry
from swinv2_jax.weights import upernet
from swinv2_jax.weights.pytorch import export_torch_weights, load_torch_weights
from swinv2_jax.weights.torch_layouts import LAYOUTS, detect_layout, hf_prefix, read_state_dict

PROG = 'python -m swinv2_jax.convert'
TO_TORCH_LAYOUTS = ('timm', 'official', 'hf')
# model family -> how its layout is detected, the layouts --to-torch writes (the first by default)
FAMILIES = (
    (UperNet, dict(detect=upernet.detect_layout, to_torch=('hf', 'mmseg'))),
    (SwinTransformerV2, dict(detect=lambda sd: detect_layout(sd)[0], to_torch=TO_TORCH_LAYOUTS)),
)


def _family(model) -> Dict[str, Any]:
    return next(row for cls, row in FAMILIES if isinstance(model, cls))

EPILOG = """\
examples:
  # PyTorch checkpoint (official, SimMIM, timm or Hugging Face; layout detected) -> DIR
  python -m swinv2_jax.convert swinv2_tiny_patch4_window8_256.pth --model swinv2_tiny_window8_256 --out ckpt/tiny
  # a headless feature extractor at another resolution (the position bias needs no resizing)
  python -m swinv2_jax.convert model.safetensors --model swinv2_tiny_window8_256 --img-size 512 \\
      --num-classes 0 --out ckpt/tiny_512_features
  # Swin V1 at another window: its position bias tables are resized bicubically (logged)
  python -m swinv2_jax.convert swin_base_patch4_window7_224.pth --model swin_base_patch4_window12_384 --out ckpt/b12
  # reduced test models: any create_model override as KEY=VALUE (Python literals)
  python -m swinv2_jax.convert t.pth --model swinv2_tiny_window8_256 --override embed_dim=16 \\
      --override 'depths=(1,2,1,1)' --override 'num_heads=(1,2,2,4)' --out ckpt/small
  # back to PyTorch (timm / official repo / Hugging Face names), as .safetensors
  python -m swinv2_jax.convert ckpt/tiny --to-torch --layout hf --out tiny_hf.safetensors
  # a segmentation model (Hugging Face UperNetForSemanticSegmentation or mmsegmentation; detected)
  python -m swinv2_jax.convert upernet-swin-base/model.safetensors --model openmmlab/upernet-swin-base --out ckpt/upb
  python -m swinv2_jax.convert ckpt/upb --to-torch --layout mmseg --out upb_mmseg.safetensors

load DIR in Python with: model, variables = swinv2_jax.load_converted(DIR)
  (also swinv2_jax.checkpoints.load_converted, its older name)
"""


def parse_override(text: str) -> Tuple[str, Any]:
    """`registry.parse_override` with argparse's error type, so that a bad value is a usage error."""
    try:
        return registry.parse_override(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    names = textwrap.wrap('model names: ' + ', '.join(registry.list_models()) + ' (official and Hugging '
                          'Face names work too)', 100, subsequent_indent='  ')
    overrides = textwrap.wrap('overrides: ' + ', '.join(registry.OVERRIDES), 100, subsequent_indent='  ')
    p = argparse.ArgumentParser(
        prog=PROG,
        description='Convert SwinV2 weights between PyTorch checkpoints (official repo, SimMIM, timm, '
                    'Hugging Face; .pth/.pt/.bin/.safetensors) and swinv2_jax converted checkpoints '
                    '(a directory: Orbax variables + config.json).',
        epilog=EPILOG + '\n'.join(names + overrides) + '\n',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', metavar='SRC',
                   help='a PyTorch checkpoint file, or with --to-torch a converted checkpoint directory')
    p.add_argument('--out', '-o', required=True, metavar='OUT',
                   help='the directory to write (PyTorch -> JAX), or the .safetensors file (--to-torch)')
    p.add_argument('--to-torch', action='store_true',
                   help='convert a converted checkpoint directory back to a PyTorch .safetensors file')
    p.add_argument('--model', '-m', metavar='NAME',
                   help='registered model name (required unless --to-torch), e.g. swinv2_tiny_window8_256')
    p.add_argument('--layout', choices=('auto',) + LAYOUTS + ('mmseg',), default=None,
                   help='PyTorch naming: auto (detect; the default when reading), official, simmim, timm, '
                        'hf, mmseg (segmentation); with --to-torch one of timm (default), official, hf, or '
                        'for a segmentation model hf (default) or mmseg')
    p.add_argument('--num-classes', type=int, metavar='N',
                   help='classifier size (0: headless, a checkpoint\'s head is then dropped)')
    p.add_argument('--img-size', type=int, metavar='N', help='input image side the model is built for')
    p.add_argument('--window-size', type=int, metavar='N',
                   help='attention window of every stage (per stage: --override "window_size=(a,b,c,d)")')
    p.add_argument('--override', action='append', default=[], type=parse_override, metavar='KEY=VALUE',
                   help='any other create_model override, VALUE a Python literal; repeatable')
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    return p


def _count(tree) -> Tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(tree)
    return len(leaves), int(sum(int(np.prod(np.shape(x))) for x in leaves))


def _overrides(args, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """create_model's keyword arguments from --override and the dedicated flags, which must agree."""
    overrides: Dict[str, Any] = {}
    for key, value in args.override:
        if key in overrides and overrides[key] != value:
            parser.error(f'--override {key} given twice with different values')
        overrides[key] = value
    for key, value in (('num_classes', args.num_classes), ('img_size', args.img_size),
                       ('window_size', args.window_size)):
        if value is None:
            continue
        if key in overrides and overrides[key] != value:
            parser.error(f'--{key.replace("_", "-")} {value} contradicts --override {key}={overrides[key]!r}')
        overrides[key] = value
    return overrides


def to_jax(args, parser: argparse.ArgumentParser) -> str:
    """PyTorch file -> converted checkpoint directory; returns the summary line."""
    from swinv2_jax.weights.converted import save_converted
    if not args.model:
        parser.error('--model NAME is required to convert a PyTorch checkpoint')
    model = registry.create_model(args.model, **_overrides(args, parser))
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:  # fail before reading
        raise ValueError(f'{args.out} already exists and is not empty; pass --overwrite to replace it')

    sd = read_state_dict(args.src)
    layout = args.layout if args.layout not in (None, 'auto') else _family(model)['detect'](sd)
    variables = load_torch_weights(sd, model, layout=layout)
    name = args.model if registry.segmentation_head(args.model) else registry.resolve_name(args.model)
    out = save_converted(args.out, variables, model, model_name=name, overwrite=args.overwrite)
    tensors, params = _count(variables)
    return (f'converted {tensors} tensors ({params:,} parameters) from the {layout}-layout {args.src} '
            f'-> {out}')


def _write_safetensors(sd: Dict[str, np.ndarray], out: str) -> None:
    """Written to a temporary sibling first, so that an interrupted write leaves no file at `out`."""
    from safetensors.numpy import save_file
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f'{out}.tmp-{os.getpid()}'
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, tmp, metadata={'format': 'pt'})
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def to_torch(args, parser: argparse.ArgumentParser) -> str:
    """Converted checkpoint directory -> PyTorch .safetensors file; returns the summary line."""
    from swinv2_jax.weights.converted import load_converted
    given = [f for f, v in (('--model', args.model), ('--num-classes', args.num_classes),
                            ('--img-size', args.img_size), ('--window-size', args.window_size),
                            ('--override', args.override)) if v]
    if given:
        parser.error(f'{", ".join(given)} not used with --to-torch: the model comes from {args.src}/config.json')
    out = os.path.abspath(args.out)
    if not out.endswith('.safetensors'):
        raise ValueError(f'--to-torch writes .safetensors files; {args.out} needs that extension')
    if os.path.exists(out) and not args.overwrite:
        raise ValueError(f'{out} already exists; pass --overwrite to replace it')

    model, variables = load_converted(args.src)
    layouts = _family(model)['to_torch']
    layout = args.layout or layouts[0]
    if layout not in layouts:
        parser.error(f'--to-torch writes a {type(model).__name__} in the {", ".join(layouts[:-1])} or '
                     f'{layouts[-1]} layout, not {layout}')
    sd = export_torch_weights(variables, model, layout=layout)
    if layout == 'hf' and model.num_classes == 0:  # Swinv2Model / SwinModel (no classifier): no prefix
        prefix = hf_prefix(model)
        sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    _write_safetensors(sd, out)
    tensors, params = _count(variables)
    return (f'wrote {len(sd)} tensors ({params:,} parameters in {tensors} JAX arrays) in the {layout} '
            f'layout -> {out}')


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m swinv2_jax.convert`: see `--help`. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = to_torch(args, parser) if args.to_torch else to_jax(args, parser)
    except (ValueError, OSError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted; nothing was written', file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
