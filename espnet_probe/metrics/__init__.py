"""Scoring: speaker-verification trials and error rates, speech quality, mel distances."""

from __future__ import annotations

import contextlib


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
