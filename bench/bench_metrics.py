"""What the request metrics cost a request: otameter's RequestMeter against recording each
request straight into prometheus_client, in one process and in multiprocess mode.

    python bench/bench_metrics.py [--requests N]

Multiprocess mode is measured in a child process (prometheus_client picks its value store
when it is imported)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def measure(requests: int) -> dict[str, float]:
    from otameter import metrics

    def per_request(record: object) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            record("/updates", "POST", 200, 0.0012)  # type: ignore[operator]
        return (time.perf_counter() - start) / requests * 1e6

    def direct(route: str, method: str, status: int, seconds: float) -> None:
        metrics.REQUESTS.labels(route, method, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(route, method).observe(seconds)

    counter = metrics.REQUESTS.labels("/updates", "POST", "200")
    histogram = metrics.REQUEST_SECONDS.labels("/updates", "POST")

    def direct_bound(route: str, method: str, status: int, seconds: float) -> None:
        counter.inc()
        histogram.observe(seconds)

    meter = metrics.RequestMeter()
    baseline = per_request(lambda *args: None)
    figures = {
        "RequestMeter.observe": per_request(meter.observe) - baseline,
        "prometheus_client, labels each time": per_request(direct) - baseline,
        "prometheus_client, children bound once": per_request(direct_bound) - baseline,
    }
    start = time.perf_counter()
    meter.flush()
    figures["RequestMeter.flush (once, all of them)"] = (time.perf_counter() - start) * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for name, value in measure(args.requests).items():
            print(f"{name}\t{value}")
        return
    print(f"{args.requests:,} requests of one route; microseconds per request")
    for mode in ("one process", "multiprocess"):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory(prefix="otameter-bench-metrics-") as tmp:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = tmp
            else:
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--requests", str(args.requests)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        print(f"\n{mode}:")
        for line in done.stdout.splitlines():
            name, value = line.split("\t")
            unit = "us in all" if "flush" in name else "us"
            print(f"  {name:<42} {float(value):8.2f} {unit}")


if __name__ == "__main__":
    main()
