"""Wall-clock timing for the benchmarks (tests/bench): numbers to print, never to assert on."""
import time


def timed(fn):
    """Call ``fn()``; return ``(seconds, result)``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
