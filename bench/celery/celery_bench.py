"""Celery on the same work as `examples/redis_bench.rs`, for comparison.

One Celery worker with 2 prefork processes (Celery's defaults otherwise:
prefetch multiplier 4, early acks), the Redis broker and result backend on
the server at REDIS_URL (default: a redis-server of its own on a free
port). Measures 2,000 serial round trips (`noop.delay(i).get()`) and
submit-all/collect-all of 20,000 no-op tasks, and counts the Redis
commands per task (INFO commandstats).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install celery redis
    /tmp/venv/bin/python bench/celery/celery_bench.py
"""

import os
import socket
import subprocess
import sys
import time

import redis
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
URL = os.environ.get("REDIS_URL", "")

app = Celery("celery_bench", broker=URL + "/0", backend=URL + "/1")
app.conf.update(broker_connection_retry_on_startup=True, result_expires=3600)


@app.task
def noop(i):
    return i


def commands(r):
    return sum(v["calls"] for k, v in r.info("commandstats").items())


def main():
    server = None
    env = dict(os.environ)
    if not URL:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL)
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}"
        for _ in range(500):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        # Re-run with the URL set, so that the worker and the client agree.
        code = subprocess.call([sys.executable, __file__], env=env)
        server.kill()
        sys.exit(code)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker",
         "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env)
    try:
        r = redis.Redis.from_url(URL + "/0")
        for i in range(16):
            noop.delay(i).get(timeout=60)
        print("celery", __import__("celery").__version__,
              "1 worker x 2 prefork processes,", URL)
        n = 2000
        times = []
        for i in range(n):
            t = time.perf_counter()
            assert noop.delay(i).get(timeout=60) == i
            times.append(time.perf_counter() - t)
        times.sort()
        q = lambda p: times[int((n - 1) * p)] * 1e6
        print(f"round trip (delay + get, one at a time, n={n}): median {q(0.5):.1f}us, "
              f"p10 {q(0.1):.1f}us, p90 {q(0.9):.1f}us, p99 {q(0.99):.1f}us")
        tasks = 20000
        before = commands(r)
        t = time.perf_counter()
        results = [noop.delay(i) for i in range(tasks)]
        submitted = time.perf_counter() - t
        for i, res in enumerate(results):
            assert res.get(timeout=300) == i
        elapsed = time.perf_counter() - t
        used = commands(r) - before
        print(f"submit all, collect all, {tasks} no-op tasks: {tasks / elapsed:.0f} tasks/s "
              f"({submitted:.1f}s to submit, {elapsed:.1f}s in all); "
              f"{used / tasks:.1f} Redis commands per task")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


if __name__ == "__main__":
    main()
