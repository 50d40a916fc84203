"""``run_in_order``: results in batch order; a stopped loop starts no batch beyond those already queued
(at most ``QUEUED_PER_THREAD`` per thread), so Ctrl-C or SIGTERM ends a measurement within about one
batch time. Before, every batch was queued at the start and the workers ran on ahead of the caller."""

import threading

from shiftprobe.probe.engine import QUEUED_PER_THREAD, run_in_order


def test_results_come_in_batch_order():
    assert list(run_in_order(lambda i: i * i, list(range(20)), threads=3)) == [i * i for i in range(20)]
    assert list(run_in_order(lambda i: -i, list(range(5)), threads=1)) == [0, -1, -2, -3, -4]


def test_a_stopped_loop_starts_no_more_than_the_queued_batches():
    threads, limit = 2, 1 + QUEUED_PER_THREAD * 2  # the consumed batch and those queued behind it
    started, lock, passed = [], threading.Lock(), threading.Event()

    def run(i):
        with lock:
            started.append(i)
            if len(started) > limit:
                passed.set()
        return i

    loop = run_in_order(run, list(range(50)), threads)
    assert next(loop) == 0
    # give unbounded workers the time to run past the queue (before: all 50 batches); bounded ones cannot
    passed.wait(0.5)
    loop.close()
    assert len(started) <= limit, sorted(started)
