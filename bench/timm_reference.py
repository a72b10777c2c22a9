"""Real timm reference for the 224x224 bench (bench/vit224-bench.ts): timm.create_model(name), the
tensors Partune tunes (names passed in, timm's own names), the engine loop's step: forward, backward,
clip to global norm 1, AdamW (decay 0.05, none on norms, biases and tokens), label smoothing 0.1.

Usage: python3 bench/timm_reference.py '{"timm": "vit_small_patch16_224", "tuned": [...names],
"cached": false, "gradientStart": 6, "batch": 8, "microBatch": null, "steps": 2, "budgetS": 60,
"threads": 1}'   -> one JSON line (img/s, peak RSS), or {"error": ...} when torch or timm is missing.

cached: the frozen blocks run once under no_grad and the steps train from their output, the same
trick as Partune's prefix cache (timm has none), with timm's own modules on either side.
"""
import json
import resource
import sys
import time

spec = json.loads(sys.argv[1])
try:
    import torch
    import torch.nn.functional as F
    import timm
except ImportError as e:
    print(json.dumps({"error": f"no reference: {e}"}))
    sys.exit(0)

torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
model = timm.create_model(spec["timm"], pretrained=False, num_classes=spec.get("numClasses", 1000))
model.train()
names = dict(model.named_parameters())
tuned = set(spec["tuned"])
unknown = sorted(tuned - set(names))
if unknown:
    print(json.dumps({"error": f"timm's {spec['timm']} has no parameters {unknown[:5]}"}))
    sys.exit(0)
for n, p in names.items():
    p.requires_grad_(n in tuned)
params = [p for n, p in names.items() if n in tuned]
no_decay = {n for n in tuned if names[n].ndim <= 1 or n in ("cls_token", "pos_embed")}
opt = torch.optim.AdamW(
    [{"params": [names[n] for n in tuned if n not in no_decay], "weight_decay": 0.05},
     {"params": [names[n] for n in tuned if n in no_decay], "weight_decay": 0.0}],
    lr=1e-4,
)
B = spec["batch"]
x = torch.randn(B, 3, 224, 224)
y = torch.arange(B) % 10
start = spec["gradientStart"]

if spec["cached"]:
    with torch.no_grad():  # (B, 197, D) tokens entering the first tuned block
        prefix = model.blocks[:start](model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))))
    rest = model.blocks[start:]
    inputs, forward = prefix, lambda t: model.forward_head(model.norm(rest(t)))
else:
    inputs, forward = x, model


def step():
    micro = spec.get("microBatch") or B
    for i in range(0, B, micro):  # micro-batches weighted by their share: the whole batch's mean
        loss = F.cross_entropy(forward(inputs[i:i + micro]), y[i:i + micro], label_smoothing=0.1) * (min(micro, B - i) / B)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


t0 = time.perf_counter()
step()
times = [time.perf_counter()]
while len(times) <= spec["steps"] and not (len(times) > 1 and times[-1] - times[0] > spec["budgetS"]):
    step()
    times.append(time.perf_counter())
timed = len(times) - 1
ms = (times[-1] - times[0]) * 1000 / timed
print(json.dumps({
    "imagesPerSecond": B * 1000 / ms,
    "msPerStep": ms,
    "warmupMs": (times[0] - t0) * 1000,
    "stepsTimed": timed,
    "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "tunedParams": sum(p.numel() for p in params),
    "totalParams": sum(p.numel() for p in names.values()),
    "torch": torch.__version__,
    "timm": timm.__version__,
    "threads": torch.get_num_threads(),
}))
