"""A description of the machine a benchmark ran on, stored with every result."""
from __future__ import annotations

import datetime
import os
import platform
import resource

import jax
import numpy as np


#: the CPU flags that decide the arithmetic rates a benchmark can reach
VECTOR_EXTENSIONS = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                     "asimd", "sve"}


def describe_machine() -> dict:
    """CPU model and vector extensions, core count, memory, library versions and the relevant
    environment variables."""
    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = round(kib / 2 ** 20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_vector_extensions": sorted(flags & VECTOR_EXTENSIONS),
        "cpu_count": os.cpu_count(), "memory_gib": memory,
        "jax": jax.__version__, "numpy": np.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "XLA", "JAX", "OMP"))},
    }


def peak_rss_gib() -> float:
    """Peak resident memory of this process image, GiB: VmHWM from /proc/self/status (ru_maxrss
    would also count a parent's memory inherited through fork before exec)."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 2 ** 20, 3)
