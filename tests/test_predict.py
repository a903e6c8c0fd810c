"""python -m swinv2_jax.predict end to end on a Hugging Face folder and generated image files:
the probabilities are those of the reference pipeline (its image processor and model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
from PIL import Image  # noqa: E402

from swinv2_jax import images  # noqa: E402
from swinv2_jax.labels import imagenet_names  # noqa: E402
from torch_refs import randomize_  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def hub_folder(tmp_path_factory):
    """A tiny SwinV2 with a 1000-class head and transformers' placeholder labels, as the hub leaves it."""
    from transformers import Swinv2Config, Swinv2ForImageClassification
    folder = tmp_path_factory.mktemp('hub')
    torch.manual_seed(0)
    ref = randomize_(Swinv2ForImageClassification(Swinv2Config(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
        num_labels=1000)).eval())
    ref.save_pretrained(folder)
    pil = getattr(transformers, 'ViTImageProcessorPil', transformers.ViTImageProcessor)
    processor = pil(size={'height': 32, 'width': 32}, resample=3)
    processor.save_pretrained(folder)
    return folder, ref, processor


def make_images(folder):
    r = np.random.RandomState(0)
    os.makedirs(folder / 'sub')
    Image.fromarray(r.randint(0, 256, (40, 52, 3), np.uint8)).save(folder / 'a.png')
    Image.fromarray(r.randint(0, 256, (61, 30, 3), np.uint8)).save(folder / 'b.jpg', quality=95)
    Image.fromarray(r.randint(0, 256, (33, 33), np.uint8), 'L').save(folder / 'sub' / 'gray.png')
    Image.fromarray(r.randint(0, 256, (33, 45, 4), np.uint8), 'RGBA').save(folder / 'sub' / 'rgba.png')
    Image.fromarray(r.randint(0, 256, (36, 36), np.uint8), 'P').save(folder / 'sub' / 'palette.png')
    Image.fromarray(r.randint(0, 256, (30, 40, 3), np.uint8)).save(folder / 'c.webp', lossless=True)
    (folder / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    (folder / 'notes.txt').write_text('not an image: skipped in folders')


def run_predict(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'swinv2_jax.predict', *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_predict_json_matches_the_reference_pipeline(tmp_path, hub_folder):
    folder, ref, processor = hub_folder
    make_images(tmp_path)
    proc = run_predict(folder, tmp_path, '--json', '--top-k', '3', '--batch-size', '4')
    assert proc.returncode == 1, proc.stderr          # the corrupt file
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    files = [os.path.relpath(r['file'], tmp_path) for r in records]
    assert files == ['a.png', 'b.jpg', 'c.webp', 'corrupt.jpg', 'sub/gray.png', 'sub/palette.png',
                     'sub/rgba.png']
    names = imagenet_names(1000)                       # placeholder labels -> the shipped ImageNet names
    for record in records:
        if record['file'].endswith('corrupt.jpg'):
            assert 'cannot read' in record['error'] and 'top_k' not in record
            continue
        image = Image.open(record['file']).convert('RGB')
        with torch.no_grad():
            pixels = processor(image, return_tensors='pt')['pixel_values']
            probs = torch.softmax(ref(pixel_values=pixels).logits[0], -1).numpy()
        top = np.argsort(-probs)[:3]
        assert [t['index'] for t in record['top_k']] == top.tolist(), record['file']
        np.testing.assert_allclose([t['prob'] for t in record['top_k']], probs[top], rtol=1e-4, atol=1e-7)
        assert [t['label'] for t in record['top_k']] == [names[i] for i in top]


def test_predict_text_output_and_batches(tmp_path, hub_folder):
    folder = hub_folder[0]
    make_images(tmp_path)
    good = [tmp_path / 'a.png', tmp_path / 'b.jpg', tmp_path / 'sub' / 'gray.png']
    proc = run_predict(folder, *good, '--top-k', '2', '--batch-size', '2')   # the last batch padded
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 * 3 and lines[0] == str(good[0]) and lines[1].strip().endswith(tuple(imagenet_names(1000)))
    one = run_predict(folder, *good, '--top-k', '2', '--batch-size', '1')
    assert one.stdout == proc.stdout                    # padding changes nothing
    bad = run_predict(folder, tmp_path / 'corrupt.jpg', tmp_path / 'missing.png')
    assert bad.returncode == 1 and bad.stdout == ''
    assert 'corrupt.jpg' in bad.stderr and 'missing.png' in bad.stderr and '2 of 2 files' in bad.stderr
    hub = run_predict('microsoft/swinv2-tiny-patch4-window8-256', tmp_path / 'a.png')
    assert hub.returncode == 2 and 'hf download microsoft/swinv2-tiny-patch4-window8-256' in hub.stderr


def test_load_image_orientation_and_modes(tmp_path):
    pixels = np.random.RandomState(0).randint(0, 256, (20, 30, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                                    # stored rotated: shown turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / 'rot.jpg', exif=exif, quality=100)
    image = images.load_image(tmp_path / 'rot.jpg')
    assert image.size == (20, 30) and image.mode == 'RGB'
    rgba = np.concatenate([pixels, np.zeros((20, 30, 1), np.uint8)], -1)
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    np.testing.assert_array_equal(np.asarray(images.load_image(tmp_path / 'alpha.png')), pixels)
    with pytest.raises(ValueError, match='cannot read'):
        images.load_image(tmp_path / 'nothing.png')
