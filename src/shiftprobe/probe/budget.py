"""The memory budget of a measurement, in bytes: the images a batch and the image-parameter pairs a chunk
hold, from the probe points' map shapes; it covers the maps of the batches and chunks in flight and their
temporaries, not the weights or the images (docs/performance.md)."""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass

import torch

#: the default budget: this fraction of the available RAM on the CPU, of the free memory on an accelerator
DEFAULT_FRACTION = {"cpu": 0.25, "accelerator": 0.5}
#: the default budget on the CPU is at most this: larger chunks do not run faster there
CPU_DEFAULT_CAP = 2**30
#: and on an accelerator at most this: on an H200, resnet50 at 224 px ran only 1.5 % slower with 16 GB than
#: with half the free memory, 69.5 GiB (docs/performance.md, "On a GPU")
ACCELERATOR_DEFAULT_CAP = 16 * 10**9
#: copies of one image's maps a batch holds: f(x), its sorted channels, the control image's maps
IMAGE_COPIES = 3
#: temporaries of the largest map per pair (a difference, an aligned comparison, a convolution's inner maps)
PAIR_TEMPORARIES = 2
#: the chunk (in pairs) the budget never exceeds, by device type: 512 on the CPU (a chunk's maps stay in the
#: cache across the metrics' passes), 4096 on an accelerator
PAIRS_PER_CHUNK = {"cpu": 512, "accelerator": 4096}
#: how to give a budget (its refusals)
BUDGET_FIX = "give a number of bytes or a size such as '2GB' or '512MiB' (or None: a share of the available memory)"
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _kind(device) -> str:
    return "cpu" if torch.device(device).type == "cpu" else "accelerator"


def parse_memory_budget(value) -> int | None:
    """``memory_budget`` in bytes: a positive number of bytes, or a size such as ``"2GB"`` or ``"512MiB"``;
    None for None (the default)."""
    if value is None:
        return None
    number, unit = value, ""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", value)
        number, unit = (float(found[1]), found[2].lower()) if found else (None, "?")
    ok = isinstance(number, (int, float)) and not isinstance(number, bool) and unit in UNITS
    if ok and math.isfinite(number) and number * UNITS[unit] >= 1:
        return int(number * UNITS[unit])
    raise ValueError(f"memory_budget={value!r}: {BUDGET_FIX}")


def available_memory(device="cpu") -> int | None:
    """Free memory of a CUDA device, else the available RAM (psutil, else ``MemAvailable`` of /proc/meminfo,
    else the free physical pages); None where none of them is known."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with contextlib.suppress(ImportError):
        import psutil

        return int(psutil.virtual_memory().available)
    with contextlib.suppress(OSError, StopIteration, ValueError, IndexError), open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_memory_budget(device) -> int:
    """A quarter of the available RAM, at most ``CPU_DEFAULT_CAP`` (CPU); half the free memory, at most
    ``ACCELERATOR_DEFAULT_CAP`` (accelerator)."""
    kind, available = _kind(device), available_memory(device)
    budget = int(available * DEFAULT_FRACTION[kind]) if available is not None else CPU_DEFAULT_CAP
    return min(budget, CPU_DEFAULT_CAP if kind == "cpu" else ACCELERATOR_DEFAULT_CAP)


def map_bytes(shapes, input_shape, dtype: torch.dtype) -> tuple[int, int]:
    """``(bytes per image of a batch, bytes per pair of a chunk)`` for probe maps of per-image ``shapes`` and
    images of ``input_shape``, in ``dtype``."""
    size = torch.empty((), dtype=dtype).element_size()
    maps = [math.prod(s) * size for s in shapes]
    image = math.prod(input_shape) * size
    total, largest = sum(maps), max(maps, default=0)
    return IMAGE_COPIES * total + 2 * image, total + image + PAIR_TEMPORARIES * largest


@dataclass(frozen=True)
class Chunking:
    """Images per batch and pairs per chunk, and what they were sized from (``budget`` None: explicit)."""

    batch_size: int
    pairs_per_chunk: int
    bytes_per_image: int
    bytes_per_pair: int
    threads: int
    budget: int | None

    @property
    def peak_bytes(self) -> int:
        """The maps of ``threads`` batches and their chunks (a chunk holds at least one parameter per image)."""
        pairs = max(self.batch_size, self.pairs_per_chunk)
        return self.threads * (self.batch_size * self.bytes_per_image + pairs * self.bytes_per_pair)


def chunking(bytes_per_image: int, bytes_per_pair: int, *, budget: int | None, threads: int, batch_size: int,
             device, pairs_per_chunk: int | None = None) -> Chunking:
    """Size a batch and its chunks to ``budget`` bytes shared by ``threads`` batches at once: a batch of at most
    ``batch_size`` images whose maps and a chunk of at least one pair per image fit, the rest to the chunk (at
    most ``PAIRS_PER_CHUNK``). ``pairs_per_chunk`` given: that chunk and ``batch_size``, no budget."""
    if pairs_per_chunk is not None:
        return Chunking(batch_size, pairs_per_chunk, bytes_per_image, bytes_per_pair, threads, None)
    per_thread = budget // max(1, threads)
    batch = max(1, min(batch_size, per_thread // max(1, bytes_per_image + bytes_per_pair)))
    pairs = (per_thread - batch * bytes_per_image) // max(1, bytes_per_pair)
    pairs = max(batch, min(PAIRS_PER_CHUNK[_kind(device)], pairs))
    return Chunking(batch, pairs, bytes_per_image, bytes_per_pair, threads, budget)


def format_bytes(n: float) -> str:
    """``1.5 GB``, ``300 MB`` (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
