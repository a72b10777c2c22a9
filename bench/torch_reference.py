"""PyTorch reference for `npm run bench`: the same ViT, batch, step and thread count as Partune.

Usage: python3 bench/torch_reference.py '{"model": {...VitConfig...}, "mode": "train", "strategy":
"attn-only", "batch": 32, "steps": 4, "threads": 1}'   -> one JSON line (img/s, peak RSS).

The model follows timm's VisionTransformer (pre-norm blocks, fused qkv, cls pooling); a training
step is forward + backward + a plain SGD update of the tuned tensors, as in the Partune bench.
Frozen tensors have requires_grad=False, so autograd stops at the first tuned block, as Partune does.
"""
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.head_dim = c["heads"], c["headDim"]
        inner = self.heads * self.head_dim
        self.qkv = nn.Linear(c["dim"], 3 * inner, bias=c["qkvBias"])
        self.proj = nn.Linear(inner, c["dim"])

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.softmax((q * self.head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1) @ v
        return self.proj(a.transpose(1, 2).reshape(B, N, -1))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Linear(c["dim"], c["mlpDim"])
        self.fc2 = nn.Linear(c["mlpDim"], c["dim"])
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh")}[c["activation"]]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c["dim"], eps=c["layerNormEps"])
        self.attn = Attention(c)
        self.norm2 = nn.LayerNorm(c["dim"], eps=c["layerNormEps"])
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, P = c["dim"], c["patchSize"]
        n = (c["imageSize"] // P) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c["channels"], D, P, P)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, D) * 0.02)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(D, eps=c["layerNormEps"])
        self.head = nn.Linear(D, c["numClasses"])

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x[:, 0]))


def tuned(name, strategy, depth):
    """Partune's preset rule (engine/tuning/strategy.ts), for the presets the bench uses."""
    if name.startswith("head."):
        return True
    if strategy == "full":
        return True
    if not name.startswith("blocks."):
        return False
    i, part = int(name.split(".")[1]), name.split(".")[2]
    attn = part in ("norm1", "attn")
    if strategy == "attn-only":
        return attn
    if strategy == "ffn-only":
        return not attn
    if strategy == "last-half":
        return i >= depth // 2
    if strategy == "linear-probe":
        return False
    raise ValueError(strategy)


def main():
    case = json.loads(sys.argv[1])
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    c = case["model"]
    model = ViT(c)
    x = torch.randn(case["batch"], c["channels"], c["imageSize"], c["imageSize"])
    y = torch.arange(case["batch"]) % c["numClasses"]
    if case["mode"] == "train":
        params = []
        for name, p in model.named_parameters():
            p.requires_grad_(tuned(name, case["strategy"], c["depth"]))
            if p.requires_grad:
                params.append(p)

        def step():
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(g, alpha=1e-4)
    else:
        def step():
            with torch.no_grad():
                model(x)

    step()
    step()
    t0 = time.perf_counter()
    for _ in range(case["steps"]):
        step()
    ms = (time.perf_counter() - t0) * 1000 / case["steps"]
    print(json.dumps({
        "imagesPerSecond": case["batch"] * 1000 / ms,
        "msPerStep": ms,
        "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


main()
