"""Scoring: speaker-verification trials and error rates, speech quality, mel distances."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Limit BLAS (OpenBLAS/MKL) threads inside the block.

    The scorers do many small matrix products (pystoi's band matrix, librosa's mel filters);
    multi-threaded BLAS only adds overhead there and fights the job-level parallelism
    (measured: score_quality on 20 utterances, 9.2 s wall with 2 BLAS threads, 6.1 s with 1).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a scikit-learn dependency, normally present; without it: no limit
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def entry_fingerprint(entry: str) -> str:
    """A wav.scp entry plus, for a file, its size and mtime: changes when the audio is rewritten
    (so cached scores go stale); a ``cmd |`` pipe is taken as written."""
    entry = entry.strip()
    if not entry.endswith("|"):
        try:
            st = os.stat(entry)
            return f"{entry}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            pass
    return entry
