"""Moving the content of images and maps, the one home of every resampling: integer shifts (``crop``: zero fill;
``roll``: circular), bilinear and Fourier sub-pixel shifts, rotations. ``(dy, dx)`` moves content down and right;
angles are counter-clockwise as displayed. Shifts act on pixels, before any normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SHIFT_MODES = ("crop", "roll")


def check_mode(mode: str) -> str:
    if mode not in SHIFT_MODES:
        raise ValueError(f"shift mode {mode!r} is not known; use one of {list(SHIFT_MODES)}, e.g. mode='crop'")
    return mode


def work_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 for interpolation and FFTs (float32 on MPS, which lacks float64)."""
    if not x.is_floating_point():
        raise ValueError(f"transforms act on float images in [0, 1], got {x.dtype}")
    return x.to(torch.float32 if x.device.type == "mps" else torch.float64)


def shift_images(x: torch.Tensor, dy: int, dx: int, mode: str = "crop") -> torch.Tensor:
    """Apply one integer shift ``T(dy, dx)`` to the last two dimensions of ``x``."""
    check_mode(mode)
    dy, dx = int(dy), int(dx)
    if mode == "roll":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_r, dst_r = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_c, dst_c = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


def shift_images_per_sample(x: torch.Tensor, shifts: torch.Tensor, mode: str = "crop") -> torch.Tensor:
    """Shift each sample of ``x`` (``B x C x H x W``) by its own ``shifts[b] = (dy, dx)`` (one gather)."""
    check_mode(mode)
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    shifts = shifts.to(device=x.device, dtype=torch.long, non_blocking=True).view(b, 2)  # host plans: no wait
    rows = torch.arange(h, device=x.device).view(1, h) - shifts[:, 0:1]  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, w) - shifts[:, 1:2]
    if mode == "roll":
        rows, cols = rows % h, cols % w
        valid = None
    else:
        valid = ((rows >= 0) & (rows < h)).view(b, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, w)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x[batch, :, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)  # B x H x W x C first
    if valid is not None:
        return (out * valid.unsqueeze(1).to(out.dtype)).contiguous()
    # the gather leaves a channels-last layout, which ``.contiguous()`` keeps when C == 1; a convolution
    # would then take another kernel and round apart from the unshifted batch (roll by (0, 0) != f(x))
    return out.clone(memory_format=torch.contiguous_format)


def bilinear_shift(x: torch.Tensor, oy: float, ox: float, mode: str = "crop") -> torch.Tensor:
    """Move the content of ``x`` (``..., H, W``) by ``(oy, ox)`` pixels with bilinear interpolation: along an
    axis an offset ``t = n + f`` gives ``(1 - f) S_n x + f S_{n+1} x`` (``S``: the integer shift of ``mode``;
    ``grid_sample(align_corners=True)`` with zero padding in crop mode). Integer offsets are exact shifts."""
    out = x
    for t, dims in ((float(oy), (1, 0)), (float(ox), (0, 1))):
        if t == 0:
            continue
        n = math.floor(t)
        f = t - n
        lo = shift_images(out, n * dims[0], n * dims[1], mode)
        if f == 0:
            out = lo
            continue
        hi = shift_images(out, (n + 1) * dims[0], (n + 1) * dims[1], mode)
        out = (1 - f) * lo + f * hi
    return out


def _phase(n: int, t: float, dtype: torch.dtype, device) -> torch.Tensor:
    """The rfft phase ramp of a circular shift by ``t`` samples on ``n`` points; for even ``n`` the Nyquist
    bin gets the real ``cos(pi t)`` (a real signal stays real, an integer ``t`` gives ``(-1)^t``)."""
    k = torch.arange(n // 2 + 1, dtype=dtype, device=device)
    angle = -2 * math.pi * t * k / n
    phase = torch.polar(torch.ones_like(angle), angle)
    if n % 2 == 0:
        phase[-1] = math.cos(math.pi * t)
    return phase


def fourier_shift(x: torch.Tensor, oy: float, ox: float, mode: str = "roll") -> torch.Tensor:
    """Move the content of ``x`` (``..., H, W``) by ``(oy, ox)`` pixels with a phase ramp in the DFT.

    ``roll``: circular, band-limited (an integer offset is ``torch.roll`` to round-off). ``crop``: zero-padded
    to twice the size along each shifted axis, shifted there and cropped back (an integer offset is the crop
    shift). Its derivative at 0 is ``shiftprobe.probe.generators.fourier_derivative``.
    """
    work = work_dtype(x)
    out = work
    for t, dim in ((float(oy), -2), (float(ox), -1)):
        if t == 0:
            continue
        n = out.shape[dim]
        if mode == "crop":
            out = F.pad(out, [0, n, 0, 0] if dim == -1 else [0, 0, 0, n])
        size = out.shape[dim]
        phase = _phase(size, t, work.dtype, work.device)
        spec = torch.fft.rfft(out, dim=dim) * (phase if dim == -1 else phase.view(-1, 1))
        out = torch.fft.irfft(spec, n=size, dim=dim)
        if mode == "crop":
            out = out.narrow(dim, 0, n)
    return out.to(x.dtype)


def rotate(x: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Rotate ``x`` (``..., H, W``) counter-clockwise by ``angle_deg`` about its centre: bilinear
    (``grid_sample``, ``align_corners=True``), zero fill; output ``(i, j)`` samples row
    ``cy + u sin t + v cos t``, column ``cx + u cos t - v sin t`` (``u = j - cx``, ``v = i - cy``)."""
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"rotation needs at least 2x2 pixels, got {h}x{w}")
    work = work_dtype(x)
    dtype, device = work.dtype, work.device
    t = math.radians(float(angle_deg))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    v = torch.arange(h, dtype=dtype, device=device).view(h, 1) - cy
    u = torch.arange(w, dtype=dtype, device=device).view(1, w) - cx
    rows = cy + u * math.sin(t) + v * math.cos(t)
    cols = cx + u * math.cos(t) - v * math.sin(t)
    grid = torch.stack([cols / (w - 1) * 2 - 1, rows / (h - 1) * 2 - 1], dim=-1).unsqueeze(0)
    out = F.grid_sample(work.reshape(1, -1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(x.shape).to(x.dtype)
