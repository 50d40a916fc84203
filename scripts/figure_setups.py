"""Reference figures: every setup of a fixed list measured through the public API, one results.json each.

    python scripts/figure_setups.py run OUT [--weights DIR] [--device cuda]  # OUT/<setup>.json, weights in DIR
    python scripts/figure_setups.py compare OLD NEW [--rtol 1e-6] [--atol 1e-12]

``run`` trains each network briefly and deterministically on real MNIST (``MNIST_ROOT``), or reuses the
weights saved in ``--weights`` by an earlier run, so that two versions of the code measure the very same
networks (a refactor or a speed-up must keep every figure). ``compare`` brings both folders' files to the
current results schema (``shiftprobe.probe.migrate``: every number kept) and compares every number of
the old file with the new one's, relative to 1e-6 (``--rtol``; ``--atol`` for values near 0, e.g. between a
CPU's and a GPU's figures), timings left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import shiftprobe

N_IMAGES = 400
STEPS = 80
SKIP_KEYS = {"seconds", "seconds_total", "seconds_per_batch", "time", "when", "version", "schema_version"}


def mnist(train: bool, n: int):
    from torchvision.datasets import MNIST

    root = os.environ.get("MNIST_ROOT")
    if not root:
        sys.exit("set MNIST_ROOT to the folder holding MNIST/raw")
    ds = MNIST(root, train=train, download=False)
    g = torch.Generator().manual_seed(12345 if train else 54321)
    idx = torch.randperm(len(ds.data), generator=g)[:n].sort().values
    return ds.data[idx].unsqueeze(1).contiguous(), ds.targets[idx].contiguous()


def networks() -> dict:
    return {
        "lab": lambda: shiftprobe.LabCNN(),
        "blurpool": lambda: shiftprobe.LabCNN(pool="blur"),
        "circular": lambda: shiftprobe.LabCNN(padding="circular"),
        "gap": lambda: shiftprobe.GapCNN(),
        "resnet": lambda: shiftprobe.SmallResNet(),
        "rot_pool": lambda: shiftprobe.RotPooledCNN(),
        "foreign": lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        ),
    }


def log_probs(out):
    out = out[0] if isinstance(out, tuple) else out
    return F.log_softmax(out, dim=1)


def trained_pair(name: str, weights: Path, device: str | None = None):
    """(trained, untrained) networks of ``name`` on ``device`` (default: the CPU): from ``weights`` if saved
    there, else built and trained on the CPU."""
    net, init = _trained_pair(name, weights)
    return (net.to(device), init.to(device)) if device else (net, init)


def _trained_pair(name: str, weights: Path):
    init_path, trained_path = weights / f"{name}_init.pt", weights / f"{name}_trained.pt"
    build = networks()[name]
    init, net = build(), build()
    if init_path.exists():
        init.load_state_dict(torch.load(init_path, weights_only=True))
        net.load_state_dict(torch.load(trained_path, weights_only=True))
        return net.eval(), init.eval()
    torch.manual_seed(0)
    init = build()
    net.load_state_dict(init.state_dict())
    x, y = mnist(True, STEPS * 64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(STEPS):
        xb = x[step * 64:(step + 1) * 64].float() / 255
        loss = F.nll_loss(log_probs(net(xb)), y[step * 64:(step + 1) * 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights.mkdir(parents=True, exist_ok=True)
    torch.save(init.state_dict(), init_path)
    torch.save(net.state_dict(), trained_path)
    return net.eval(), init.eval()


def setups():
    T = shiftprobe.Translation
    fams = [T(max_shift=2), shiftprobe.Rotation90(), shiftprobe.Flip(), shiftprobe.Rotation(max_angle=30.0, step=10.0),
            shiftprobe.SubpixelTranslation(max_offset=1.0, step=0.25),
            shiftprobe.SubpixelTranslation(max_offset=1.0, step=0.25, method="fourier", mode="roll", name="subpixel_fourier")]
    return {
        "lab_crop_grid": ("lab", T(max_shift=4), None),
        "lab_crop_axis": ("lab", T(max_shift=4, pattern="axis"), None),
        "lab_crop_random": ("lab", T(max_shift=4, pattern="random"), None),
        "lab_crop_noexact_fastpath_off": ("lab", T(max_shift=3), dict(fast_path=False)),
        "lab_roll": ("lab", T(max_shift=4, mode="roll"), None),
        "blurpool": ("blurpool", T(max_shift=4), None),
        "circular_roll": ("circular", T(max_shift=4, mode="roll"), None),
        "gap": ("gap", T(max_shift=4), None),
        "resnet": ("resnet", T(max_shift=2), None),
        "families_lab": ("lab", fams, None),
        "families_rot_pool": ("rot_pool", [shiftprobe.Rotation90(), shiftprobe.Flip()], None),
        "foreign_api": ("foreign", [T(max_shift=3), shiftprobe.Rotation90()], None),
    }


def run(out: Path, weights: Path, only: str | None = None, device: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    images, labels = mnist(False, N_IMAGES)
    for key, (name, transform, extra) in setups().items():
        if only and only not in key:
            continue
        net, init = trained_pair(name, weights, device)
        res = shiftprobe.measure(net, images, labels, transform=transform, untrained=init, device=device,
                                 **(extra or {}))
        res.save(out / f"{key}.json")
        print(key, "done", flush=True)
    for name, layers in (("lab", ["conv1", "conv2", "fc1", "logits"]), ("foreign", ["0", "3", "6", "output"])):
        if only and only not in f"lie_{name}":
            continue
        net, init = trained_pair(name, weights, device)
        lie = {"trained": shiftprobe.lie_derivative(net, images[:100], layers=layers, device=device),
               "untrained": shiftprobe.lie_derivative(init, images[:100], layers=layers, device=device)}
        (out / f"lie_{name}.json").write_text(json.dumps(lie, indent=1, default=str))
        print(f"lie_{name} done", flush=True)


def leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k) not in SKIP_KEYS:
                yield from leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def close(a, b, rtol: float, atol: float = 1e-12) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + atol


def load(path: Path) -> dict:
    from shiftprobe.probe.migrate import migrate

    data = json.loads(path.read_text())
    return data if path.name.startswith("lie_") else migrate(data)


def compare(old: Path, new: Path, rtol: float, atol: float = 1e-12) -> int:
    bad = 0
    for path in sorted(old.glob("*.json")):
        if not (new / path.name).exists():
            continue
        a, b = dict(leaves(load(path))), dict(leaves(load(new / path.name)))
        missing = sorted(set(a) - set(b))
        diffs = [(k, a[k], b[k]) for k in a if k in b and not close(a[k], b[k], rtol, atol)]
        worst = max((abs(x - y) / max(abs(x), abs(y), 1e-300) for _, x, y in
                     ((k, a[k], b[k]) for k in a if k in b) if isinstance(x, float) and isinstance(y, float)
                     and not (math.isnan(x) or math.isnan(y))), default=0.0)
        print(f"{path.name}: {len(a)} values, {len(diffs)} differ, {len(missing)} missing, worst rel {worst:.2e}")
        for k, x, y in diffs[:5]:
            print(f"   {k}: {x!r} -> {y!r}")
        for k in missing[:5]:
            print(f"   missing {k}")
        bad += len(diffs) + len(missing)
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--weights", type=Path, default=None)
    r.add_argument("--only", default=None, help="run only the setups whose name contains this text")
    r.add_argument("--device", default=None, help="where to measure (default: the network's device, the CPU)")
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--rtol", type=float, default=1e-6)
    c.add_argument("--atol", type=float, default=1e-12)
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.out, args.weights or args.out / "weights", args.only, args.device)
    else:
        sys.exit(compare(args.old, args.new, args.rtol, args.atol))


if __name__ == "__main__":
    main()
