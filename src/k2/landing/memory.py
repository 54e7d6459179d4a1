"""Giving freed memory back to the OS between a flush's phases (decode, then the Iceberg write)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import pyarrow as pa


def _libc_trim() -> Callable[[int], object] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_trim()


def release_memory() -> None:
    """Give freed memory back to the OS: glibc's heap (``malloc_trim``) and Arrow's pool.

    Python objects (the buffered Messages), DuckDB's decode and Arrow's Parquet write use three different
    allocators; memory one of them frees is not reused by the next, so without this the peak of a flush
    was the *sum* of its phases (measured: 812 -> 721 MiB peak for one 200,000-row commit). Called once
    per table per flush, between decoding and the Iceberg write.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
    pa.default_memory_pool().release_unused()
