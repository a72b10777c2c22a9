"""Independent reference for Partune's tests: real timm (PyTorch) and Pillow, nothing from Partune.

Runs on Debian's /usr/bin/python3 with python3-torch, python3-torchvision and python3-pil, plus
timm and safetensors installed from local wheels onto PYTHONPATH (tests/reference/timm.ts does
that). Every subcommand prints JSON to stdout; raw arrays are little-endian, C order.

  config NAME [--img-size N]
  save NAME OUT.safetensors --num-classes K --seed S [--img-size N]
  logits CKPT.safetensors NAME K IMG_SIZE (--pixels FILE.f32 --shape N,H,W,C | --images A.jpg ...)
  transform NAME IMG_SIZE OUT.u8 IMAGES...
  resample IN.f32 OUT.f32 --shape 1,T,D --old-grid H,W --new-grid H2,W2 --prefix-tokens P
  pil-resize IN.png OUT.u8 W H --filter bicubic|bilinear [--box l,t,r,b]
"""
import argparse
import json
import sys

import numpy as np
from PIL import Image


def ints(text):
    return [int(v) for v in text.split(',')]


def floats(text):
    return [float(v) for v in text.split(',')]


def emit(obj):
    json.dump(obj, sys.stdout)
    sys.stdout.write('\n')


def create(name, **kwargs):
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def data_config(model, img_size=None):
    # resolve_data_config({}, model=...) reads the *pretrained* cfg, so a model created with
    # img_size=384 still reports input_size 224; timm's own train/validate scripts pass --img-size
    # through args, which is what we do to get the eval transform "at that size".
    from timm.data import resolve_data_config

    args = {} if img_size is None else {'img_size': img_size}
    cfg = resolve_data_config(args, model=model)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def open_rgb(path):
    with Image.open(path) as im:
        return im.convert('RGB')


def split_pil_stage(transform, img):
    """Applies the leading PIL->PIL transforms of a Compose; returns (pil image, remaining transforms)."""
    steps = list(transform.transforms)
    for i, step in enumerate(steps):
        out = step(img)
        if not isinstance(out, Image.Image):
            return img, steps[i:]
        img = out
    return img, []


def cmd_config(a):
    emit(data_config(create(a.name), a.img_size))


def cmd_save(a):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    kwargs = {'num_classes': a.num_classes}
    if a.img_size is not None:
        kwargs['img_size'] = a.img_size
    model = create(a.name, **kwargs)
    # timm initialises biases to 0, LayerNorms to 1/0 and cls_token to ~1e-6: perturb them so a
    # port that drops a bias or swaps weight/bias cannot pass by accident.
    gen = torch.Generator().manual_seed(a.seed + 1)
    norm_params = {f'{m}.{p}' for m, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm) for p, _ in mod.named_parameters(recurse=False)}
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if pname in norm_params or pname.endswith('bias') or pname in ('cls_token', 'pos_embed', 'reg_token'):
                param.add_(torch.randn(param.shape, generator=gen) * 0.02)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, a.out)
    emit({'tensors': [{'name': k, 'shape': list(v.shape)} for k, v in tensors.items()]})


def cmd_logits(a):
    import torch
    from safetensors.torch import load_file
    from timm.data import create_transform

    model = create(a.name, num_classes=a.num_classes, img_size=a.img_size)
    model.load_state_dict(load_file(a.ckpt), strict=True)
    model = model.float().eval()
    if a.pixels:
        if not a.shape:
            sys.exit('--pixels needs --shape N,H,W,C')
        arr = np.fromfile(a.pixels, dtype='<f4').reshape(ints(a.shape))
        x = torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).contiguous()
    elif a.images:
        transform = create_transform(**data_config(model, a.img_size))
        x = torch.stack([transform(open_rgb(p)) for p in a.images])
    else:
        sys.exit('give --pixels FILE --shape N,H,W,C or --images A.jpg ...')
    with torch.no_grad():
        logits = model(x.float())
    emit({'logits': logits.tolist()})


def cmd_transform(a):
    import torch
    from timm.data import create_transform

    cfg = data_config(create(a.name, img_size=a.img_size), a.img_size)
    transform = create_transform(**cfg)
    chunks, shape, pil_stage = [], None, None
    for path in a.images:
        img = open_rgb(path)
        pil, rest = split_pil_stage(transform, img)
        pil_stage = [repr(t) for t in transform.transforms[: len(transform.transforms) - len(rest)]]
        tensor = pil
        for step in rest:
            tensor = step(tensor)
        if not torch.equal(tensor, transform(img)):
            sys.exit(f'{path}: PIL stage + ToTensor/Normalize differs from the full transform')
        hwc = np.asarray(pil, dtype=np.uint8)
        if shape is not None and hwc.shape != shape:
            sys.exit(f'{path}: output shape {hwc.shape} differs from {shape}')
        shape = hwc.shape
        chunks.append(hwc.tobytes())
    with open(a.out, 'wb') as f:
        f.write(b''.join(chunks))
    emit({'config': cfg, 'shape': [len(a.images), *shape], 'pil_stage': pil_stage})


def cmd_resample(a):
    import torch
    from timm.layers import resample_abs_pos_embed

    shape = ints(a.shape)
    old, new = ints(a.old_grid), ints(a.new_grid)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != old[0] * old[1] + a.prefix_tokens:
        sys.exit(f'--shape {shape} does not hold {a.prefix_tokens} prefix tokens + a {old} grid')
    posemb = torch.from_numpy(np.fromfile(a.inp, dtype='<f4').reshape(shape).copy())
    # vision_transformer.checkpoint_filter_fn calls it with interpolation='bicubic', antialias=True
    # (timm's defaults), num_prefix_tokens=model.num_prefix_tokens and no old_size (square assumed).
    out = resample_abs_pos_embed(posemb, new_size=new, old_size=old, num_prefix_tokens=a.prefix_tokens, interpolation=a.interpolation, antialias=a.antialias)
    out.detach().numpy().astype('<f4').tofile(a.out)
    emit({'shape': list(out.shape), 'interpolation': a.interpolation, 'antialias': a.antialias})


def cmd_pil_resize(a):
    filters = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR, 'nearest': Image.NEAREST, 'lanczos': Image.LANCZOS}
    img = open_rgb(a.inp)
    box = tuple(floats(a.box)) if a.box else None
    out = img.resize((a.width, a.height), resample=filters[a.filter], box=box)
    arr = np.asarray(out, dtype=np.uint8)
    with open(a.out, 'wb') as f:
        f.write(arr.tobytes())
    emit({'shape': list(arr.shape), 'pil': Image.__version__})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)

    s = sub.add_parser('config')
    s.add_argument('name')
    s.add_argument('--img-size', type=int)
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser('save')
    s.add_argument('name')
    s.add_argument('out')
    s.add_argument('--num-classes', type=int, required=True)
    s.add_argument('--seed', type=int, required=True)
    s.add_argument('--img-size', type=int)
    s.set_defaults(fn=cmd_save)

    s = sub.add_parser('logits')
    s.add_argument('ckpt')
    s.add_argument('name')
    s.add_argument('num_classes', type=int)
    s.add_argument('img_size', type=int)
    s.add_argument('--pixels')
    s.add_argument('--shape')
    s.add_argument('--images', nargs='+')
    s.set_defaults(fn=cmd_logits)

    s = sub.add_parser('transform')
    s.add_argument('name')
    s.add_argument('img_size', type=int)
    s.add_argument('out')
    s.add_argument('images', nargs='+')
    s.set_defaults(fn=cmd_transform)

    s = sub.add_parser('resample')
    s.add_argument('inp')
    s.add_argument('out')
    s.add_argument('--shape', required=True)
    s.add_argument('--old-grid', required=True)
    s.add_argument('--new-grid', required=True)
    s.add_argument('--prefix-tokens', type=int, default=1)
    s.add_argument('--interpolation', default='bicubic')
    s.add_argument('--no-antialias', dest='antialias', action='store_false')
    s.set_defaults(fn=cmd_resample)

    s = sub.add_parser('pil-resize')
    s.add_argument('inp')
    s.add_argument('out')
    s.add_argument('width', type=int)
    s.add_argument('height', type=int)
    s.add_argument('--filter', choices=['bicubic', 'bilinear', 'nearest', 'lanczos'], default='bicubic')
    s.add_argument('--box')
    s.set_defaults(fn=cmd_pil_resize)

    a = p.parse_args()
    a.fn(a)


if __name__ == '__main__':
    main()
