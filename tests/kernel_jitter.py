"""A CPU whose kernels round differently: a test-only stand-in for "another machine".

oneDNN and the BLAS choose their convolution and matmul kernels by shape and CPU (AVX-512, AVX2, the
scalar ``ATEN_CPU_CAPABILITY=default``), so a layer run on ``B`` images, on ``B S`` images or on a
zero-padded image may round each output differently, by a few units in the last place. On one given
machine the kernels often happen to agree bit for bit, which hides a test (or an engine shortcut) that
assumes they do. ``kernel_jitter()`` makes every ``conv2d`` and ``linear`` result differ by up to
``ULPS`` units in the last place, by a pattern fixed by the call's shapes and dtype:

* the same call on the same input gives the same bits (deterministic, as a real kernel is);
* the same image in a batch of another size, or a map computed on a padded canvas, does not.

The numerics tests (marker ``numerics``) run under it when ``SHIFTPROBE_KERNEL_JITTER=1`` (``.ci/run``'s
second pass, with ``ATEN_CPU_CAPABILITY=default``); the fallback tests use it directly.
"""

from __future__ import annotations

import contextlib
import zlib

import torch
import torch.nn.functional as F

#: the largest perturbation, in units in the last place of the result's dtype
ULPS = 4
#: the environment variable that runs the tests marked ``numerics`` under ``kernel_jitter``
ENV = "SHIFTPROBE_KERNEL_JITTER"
_PATCHED = ("conv2d", "linear")
_factors: dict[tuple, torch.Tensor] = {}


def _factor(key: tuple, out: torch.Tensor) -> torch.Tensor:
    """``1 + k eps`` with ``k`` in ``[-ULPS, ULPS]``, one per output element, seeded by ``key``."""
    full = (*key, str(out.device))
    if full not in _factors:
        # a normal tensor even when first asked for in inference mode (autograd may use it later)
        with torch.inference_mode(False):
            _factors[full] = _new_factor(key, out)
    return _factors[full]


def _new_factor(key: tuple, out: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
    k = torch.randint(-ULPS, ULPS + 1, tuple(out.shape), generator=g, dtype=torch.float64)
    return (1 + k * torch.finfo(out.dtype).eps).to(dtype=out.dtype, device=out.device)


def _jittered(name: str, fn):
    def call(input, weight, *args, **kwargs):
        out = fn(input, weight, *args, **kwargs)
        if not out.is_floating_point():
            return out
        key = (name, tuple(input.shape), tuple(weight.shape), tuple(out.shape), str(out.dtype))
        return out * _factor(key, out)

    return call


@contextlib.contextmanager
def kernel_jitter():
    """Every ``torch.nn.functional.conv2d`` / ``linear`` result perturbed by up to ``ULPS`` ulps, by a
    pattern fixed by the call's shapes (see the module docstring); restored on exit."""
    originals = {name: getattr(F, name) for name in _PATCHED}
    try:
        for name, fn in originals.items():
            setattr(F, name, _jittered(name, fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)
