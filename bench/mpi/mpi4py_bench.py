"""mpi4py.futures on the workloads of examples/mpi_bench.rs, for bench/mpi/run.sh.

Run (static mode: rank 0 runs this script, the other ranks are workers):

    mpirun --oversubscribe -n 3 /usr/bin/python3 -m mpi4py.futures bench/mpi/mpi4py_bench.py

Prints one `RESULT <workload> <nanoseconds>` line per workload, as the Rust
side does:
  submit_all  20,000 no-op tasks submitted, then collected: per task
  round_trip  2,000 serial submit + result: the median one
  map         map over 200,000 items, chunksize 1000: per item
  start_cold  the first executor: make it, one task, shut it down
  start_warm  later executors, the same: the median of 5
With the argument `start` it only makes an executor, runs one task and
exits (run.sh times the whole mpirun).
(MPI_Init ran when `-m mpi4py.futures` imported mpi4py.MPI, before
start_cold; the Rust side initializes MPI inside its start_cold.)
"""

import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor

SUBMITS = 20_000
ROUND_TRIPS = 2_000
MAP_ITEMS = 200_000
CHUNKSIZE = 1000


def noop(x):
    return x


def report(name, seconds):
    print(f"RESULT {name} {seconds * 1e9:.1f}", flush=True)


def start_once():
    start = time.perf_counter()
    with MPIPoolExecutor() as pool:
        assert pool.submit(noop, 1).result() == 1
    return time.perf_counter() - start


def main():
    if sys.argv[1:] == ["start"]:
        # Only start, one task, shut down: run.sh times the whole job.
        start_once()
        return
    report("start_cold", start_once())
    with MPIPoolExecutor() as pool:
        # Warm-up: both workers answered once.
        assert list(pool.map(noop, range(100))) == list(range(100))

        start = time.perf_counter()
        futures = [pool.submit(noop, i) for i in range(SUBMITS)]
        total = sum(f.result() for f in futures)
        report("submit_all", (time.perf_counter() - start) / SUBMITS)
        assert total == SUBMITS * (SUBMITS - 1) // 2

        times = []
        for i in range(ROUND_TRIPS + 100):
            start = time.perf_counter()
            assert pool.submit(noop, i).result() == i
            times.append(time.perf_counter() - start)
        report("round_trip", statistics.median(times[100:]))

        start = time.perf_counter()
        total = sum(pool.map(noop, range(MAP_ITEMS), chunksize=CHUNKSIZE))
        report("map", (time.perf_counter() - start) / MAP_ITEMS)
        assert total == MAP_ITEMS * (MAP_ITEMS - 1) // 2
    report("start_warm", statistics.median(start_once() for _ in range(5)))


if __name__ == "__main__":
    main()
