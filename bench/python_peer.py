#!/usr/bin/env python3
"""Python's concurrent.futures on the workloads of bench/compare.rs.

`cargo bench --bench compare` runs this script as a subprocess and reads the
JSON it prints on stdout; it can also be run by hand:

    python3 bench/python_peer.py thread --submit-all 200000 \
        --round-trips 20000 --map-items 1000000
    python3 bench/python_peer.py process --submit-all 20000 \
        --round-trips 2000 --map-items 200000 --chunksize 1000

Every workload is warmed up first (at a tenth of its size), then repeated;
each sample is the time of one full run divided by its number of tasks
(items, round trips), in nanoseconds, wall-clock (`samples_ns`) and CPU time
of this process (`cpu_ns`; worker processes not included). The repetition count adapts to the
run time so that the whole script stays within a few tens of seconds.
"""

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

# A workload's repetitions stop once they have taken this long (but at least
# MIN_REPS and at most MAX_REPS are run).
BUDGET_S = 3.0
MIN_REPS = 3
MAX_REPS = 5


def noop(i):
    return i


def small(x):
    return x * 2 + 1


def submit_all(ex, n):
    start = time.perf_counter()
    futures = [ex.submit(noop, i) for i in range(n)]
    total = 0
    for f in futures:
        total += f.result()
    elapsed = time.perf_counter() - start
    assert total == n * (n - 1) // 2
    return elapsed


def round_trips(ex, n):
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += ex.submit(noop, i).result()
    elapsed = time.perf_counter() - start
    assert total == n * (n - 1) // 2
    return elapsed


def map_items(ex, n, chunksize):
    start = time.perf_counter()
    total = 0
    for r in ex.map(small, range(n), chunksize=chunksize):
        total += r
    elapsed = time.perf_counter() - start
    assert total == n * n
    return elapsed


def measure(run, n):
    """Warm up, then per-task samples in ns, as many as the budget allows:
    wall-clock time, and CPU time of this process (all its threads)."""
    run(max(1, n // 10))
    samples = []
    cpu = []
    spent = 0.0
    while len(samples) < MAX_REPS:
        cpu_before = time.process_time()
        t = run(n)
        cpu.append((time.process_time() - cpu_before) * 1e9 / n)
        samples.append(t * 1e9 / n)
        spent += t
        if len(samples) >= MIN_REPS and spent >= BUDGET_S:
            break
    return {"n": n, "samples_ns": samples, "cpu_ns": cpu}


def start_to_shutdown(n):
    """n times: pool start, first result, shutdown."""
    start = time.perf_counter()
    for _ in range(n):
        with ProcessPoolExecutor(2) as ex:
            assert ex.submit(noop, 1).result() == 1
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["thread", "process"])
    parser.add_argument("--submit-all", type=int, required=True)
    parser.add_argument("--round-trips", type=int, required=True)
    parser.add_argument("--map-items", type=int, required=True)
    parser.add_argument("--chunksize", type=int, default=1)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    out = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "mode": args.mode,
        "workloads": {},
    }
    w = out["workloads"]
    if args.mode == "thread":
        with ThreadPoolExecutor(4) as ex:
            w["submit_all"] = measure(lambda n: submit_all(ex, n), args.submit_all)
        with ThreadPoolExecutor(4) as ex:
            w["round_trip"] = measure(lambda n: round_trips(ex, n), args.round_trips)
        with ThreadPoolExecutor(4) as ex:
            w["map"] = measure(lambda n: map_items(ex, n, args.chunksize), args.map_items)
    else:
        with ProcessPoolExecutor(2) as ex:
            w["submit_all"] = measure(lambda n: submit_all(ex, n), args.submit_all)
        with ProcessPoolExecutor(2) as ex:
            w["round_trip"] = measure(lambda n: round_trips(ex, n), args.round_trips)
        with ProcessPoolExecutor(2) as ex:
            w["map"] = measure(lambda n: map_items(ex, n, args.chunksize), args.map_items)
        w["start_shutdown"] = measure(start_to_shutdown, args.starts)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
