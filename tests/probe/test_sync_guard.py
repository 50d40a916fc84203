"""Issue 12: no host-device synchronisation in the per-batch work of the engines.

No GPU is needed: the measurement runs on CPU tensors with the accelerator paths forced
(``pairs.on_accelerator`` patched to True) under a ``TorchFunctionMode`` that tracks which tensors
live "on the device" (the model's parameters and buffers, whatever ``.to(...)`` / ``.cuda()`` return,
tensors created with ``device=``, and everything computed from those) and records every call that
would make the host wait for the device when one of its tensor arguments is such a tensor:
``bool()`` / ``int()`` / ``float()`` / ``.item()`` / ``.tolist()`` / ``.cpu()``, ``nonzero`` and the
other data-dependent output shapes, ``torch.equal``, and indexing with a boolean mask. The plan's
shifts are host tensors and may drive Python control flow; reads marked with ``engine.host_read()``
are allowed (the check of ``window_layers``, once per batch shape).

The guard is active inside ``PairComputer.batch_updates`` (every transform) and the accumulator's
``update``; everything else of the measurement (geometry inference, the crop windows' self-check,
``compute``) may read the device.
``.numpy()`` is not counted: only ``sort_channels``' CPU path calls it, and that path is chosen by the
device type (an accelerator sorts with ``torch.sort``).
"""

import traceback

import pytest
import torch
from tolerances import assert_same_figures
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import shiftprobe.probe.pairs as pairs
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.accumulator import PairMetricAccumulator
from shiftprobe.probe.families import Rotation90, SubpixelTranslation
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.translation import Translation

#: calls that read a device tensor on the host (or whose output shape depends on its values)
SYNCS = {
    "__bool__", "__int__", "__float__", "__index__", "__complex__", "item", "tolist", "cpu", "is_nonzero",
    "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave",
    "equal", "allclose",
}
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}
MARK = "_shiftprobe_on_device"


def _host_reads_allowed() -> bool:
    return pairs._host_reads.depth > 0  # inside ``pairs.host_read()``


def _on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, MARK, False)


def _mark(out) -> None:
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            try:
                setattr(t, MARK, True)
            except (AttributeError, RuntimeError):  # pragma: no cover - a tensor that takes no attributes
                pass


class SyncGuard(TorchFunctionMode):
    """Tracks device tensors; inside ``guarded`` sections records every host read of one."""

    def __init__(self):
        super().__init__()
        self.depth = 0  # > 0 inside a guarded section
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        on_device = any(_on_device(a) for a in flat)
        name = getattr(func, "__name__", str(func))
        if on_device and self.depth and not _host_reads_allowed():
            bool_mask = name in INDEXING and any(
                _on_device(a) and a.dtype == torch.bool for a in tree_flatten(args[1:2])[0]
            )
            if name in SYNCS or bool_mask:
                frames = [f for f in traceback.extract_stack() if "shiftprobe" in f.filename and "tests" not in f.filename]
                where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"
                self.violations.append(f"{name} ({'boolean mask' if bool_mask else 'host read'}) at {where}")
        out = func(*args, **kwargs)
        if name in ("to", "cuda") and out is args[0]:
            # on the CPU ``.to(device)`` returns its input itself: mark a new alias, not the host tensor
            out = out.view_as(out)
        if on_device or name in ("to", "cuda") or kwargs.get("device") is not None:
            _mark(out)
        return out


@pytest.fixture
def guard(monkeypatch):
    """The accelerator paths on CPU tensors, with the guard around the per-batch work."""
    monkeypatch.setattr(pairs, "on_accelerator", lambda device: True)
    mode = SyncGuard()

    def guarded(fn):
        def wrapper(*args, **kwargs):
            mode.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                mode.depth -= 1

        return wrapper

    monkeypatch.setattr(pairs.PairComputer, "batch_updates", guarded(pairs.PairComputer.batch_updates))
    monkeypatch.setattr(PairMetricAccumulator, "update", guarded(PairMetricAccumulator.update))
    return mode


def _setup(n=10, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(seed)
    net = LabCNN(**kw)
    return net, images, labels


TRANSLATION_CASES = {
    "crop fast path": (dict(), dict(max_shift=2), dict()),
    "crop plain path": (dict(), dict(max_shift=2), dict(fast_path=False)),
    "roll": (dict(padding="circular"), dict(max_shift=2, mode="roll"), dict()),
    "random pattern": (dict(), dict(max_shift=3, pattern="random"), dict()),
    "blurpool": (dict(pool="blur"), dict(max_shift=1), dict()),
}


@pytest.mark.parametrize("case", list(TRANSLATION_CASES))
def test_translation_batches_never_read_the_device(guard, case):
    model_kw, plan_kw, run_kw = TRANSLATION_CASES[case]
    net, images, labels = _setup(**model_kw)
    plan = Translation(**plan_kw)
    kw = dict(control_seed=1, batch_size=4, pairs_per_chunk=7, workers=1, **run_kw)
    with guard:
        _mark(list(net.parameters()) + list(net.buffers()))
        res = measure_family(net, images, labels, plan, **kw)
    assert guard.violations == [], "\n".join(guard.violations)
    # the branch-free accelerator paths give the CPU paths' figures (to float32: the CPU path sorts and
    # reduces only the pairs that are not exact, other tensor shapes that a kernel may round apart)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pairs, "on_accelerator", lambda device: False)
        cpu = measure_family(_setup(**model_kw)[0], images, labels, plan, **kw)
    assert_same_figures(res, cpu, torch.float32)


@pytest.mark.parametrize("family", [Rotation90(), SubpixelTranslation()], ids=["rot90", "subpixel"])
def test_family_batches_never_read_the_device(guard, family):
    net, images, labels = _setup()
    kw = dict(control_seed=1, batch_size=4, pairs_per_chunk=5, workers=1)
    with guard:
        _mark(list(net.parameters()) + list(net.buffers()))
        measure_family(net, images, labels, family, **kw)
    assert guard.violations == [], "\n".join(guard.violations)


def test_the_guard_catches_host_reads(guard):
    """The guard itself: each kind of synchronisation on a device tensor is recorded, host tensors
    and ``host_read`` sections are free."""
    with guard:
        x = torch.zeros(3).to("cpu")
        host = torch.tensor([1, 2])
        guard.depth += 1
        host.tolist(), bool(host.any()), torch.nonzero(host)
        with pairs.host_read():
            x.tolist()
        assert guard.violations == []
        bool(x.any()), x.tolist(), x[0].item(), x[x > 0], torch.nonzero(x), float(x.sum())
        guard.depth -= 1
    assert [v.split(" ")[0] for v in guard.violations] == ["__bool__", "tolist", "item", "__getitem__", "nonzero", "__float__"]


def test_chunk_cap_per_device():
    from shiftprobe.probe.budget import chunking

    for device, cap in (("cpu", 512), (torch.device("cuda"), 4096), ("mps", 4096)):
        assert chunking(1, 1, budget=2**40, threads=1, batch_size=64, device=device).pairs_per_chunk == cap
