#!/usr/bin/env bash
# MpiPoolExecutor against mpi4py.futures, same workloads, same ranks, one run.
#
#   bench/mpi/run.sh [RUNS]        # default 5 runs of each, alternating
#
# Both contenders get `mpirun --oversubscribe -n 3` (rank 0 + 2 worker
# ranks) and the same MPIRUN_FLAGS (default `--mca mpi_yield_when_idle 1`:
# on a machine with fewer cores than busy-polling ranks, idle ranks must
# yield or they starve the busy ones; set MPIRUN_FLAGS= to drop it).
# mpi4py runs under /usr/bin/python3 (PYTHON=...), in static mode
# (`-m mpi4py.futures`). Prints a markdown table of medians over the runs
# and the ratio ours/mpi4py (below 1: ours takes less time).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
PYTHON=${PYTHON:-/usr/bin/python3}
MPIRUN_FLAGS=${MPIRUN_FLAGS---mca mpi_yield_when_idle 1}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM-1}

cargo build --quiet --release --features mpi --example mpi_bench
OURS=(mpirun --oversubscribe $MPIRUN_FLAGS -n 3 -x CONCURRENT_FUTURES_MPI=1 target/release/examples/mpi_bench)
THEIRS=(mpirun --oversubscribe $MPIRUN_FLAGS -n 3 "$PYTHON" -m mpi4py.futures bench/mpi/mpi4py_bench.py)
"$PYTHON" -c 'import mpi4py; print("mpi4py", mpi4py.__version__)' >&2

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Whole job: mpirun, start, one task, shutdown, exit (ns).
job() {
    local who=$1; shift
    local t0 t1
    t0=$(date +%s%N)
    timeout 120 "$@" start >/dev/null
    t1=$(date +%s%N)
    echo "$who job $((t1 - t0))" >>"$out"
}
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    timeout 300 "${OURS[@]}" | sed -n 's/^RESULT /ours /p' >>"$out"
    timeout 300 "${THEIRS[@]}" | sed -n 's/^RESULT /mpi4py /p' >>"$out"
    job ours "${OURS[@]}"
    job mpi4py "${THEIRS[@]}"
done

python3 - "$out" "$RUNS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, name, ns = line.split()
    rows.setdefault(name, {}).setdefault(who, []).append(float(ns))
labels = [
    ("submit_all", "(a) 20,000 no-op tasks submitted, then collected, per task"),
    ("round_trip", "(b) serial round trip, median of 2,000"),
    ("map", "(c) map of 200,000 items, chunksize 1000, per item"),
    ("start_cold", "(d) first executor: new + one task + shutdown (ours: with MPI_Init)"),
    ("start_warm", "(d) later executor: new + one task + shutdown"),
    ("job", "(d) whole mpirun job: launch, start, one task, shutdown, exit"),
    ("mpi_thread_cpu_per_job", "rank 0's MPI thread: CPU time per job of (a)"),
]
def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"
print(f"| workload | ours | mpi4py.futures | ours / mpi4py |")
print(f"|---|---:|---:|---:|")
for key, label in labels:
    ours = statistics.median(rows[key]["ours"]) if "ours" in rows.get(key, {}) else None
    theirs = statistics.median(rows[key]["mpi4py"]) if "mpi4py" in rows.get(key, {}) else None
    if ours is None:
        continue
    if theirs is None:
        print(f"| {label} | {fmt(ours)} | | |")
    else:
        print(f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ours / theirs:.3f} |")
print(f"\nmedians of {sys.argv[2]} runs each")
PY
