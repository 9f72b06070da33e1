"""`detector serve` under a real load generator: one service process on Redis, wrk POSTing varied checks.

    python -m bench.serve [--rates 500,1000,2000] [--seconds 10] [--connections 128] [--json out.json]
    python -m bench serve   # the same with the defaults, as `make bench` runs it

Starts a redis-server of its own (or uses ``--store`` / ``$REDIS_URL``) and one `detector serve` on it with
the default policy, then drives ``POST /v1/checks`` with wrk (Debian's ``wrk``; ``scripts/system-deps.sh``
installs it). Every request is a different one: its own request id, a valid mobile number of one of 16
countries (4 random digits after the block), a client IP drawn from 198.18.0.0/15 (benchmarking range),
a session id, an OTP text.

Debian's wrk has no constant-rate mode (wrk2's ``-R``) and hey cannot vary the body, so each rate is set by
wrk's Lua ``delay()``: every connection waits ``connections / rate`` seconds before each request, less the
latency it expects. The rate actually achieved is reported next to the one offered; latency is wrk's, from
sending a request to its answer. Many connections (128) keep the achieved rate close to the offered one
whatever the latency. ``max`` is wrk without any delay, on ``--max-connections`` (64).

Target (issue 11): p99 ≤ 10 ms at 1,000 checks/s. wrk, Redis and the service share the machine's cores:
the report gives the core count and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline import number_blocks

TOKEN = f"bench-{uuid.uuid4().hex}"
HASH_KEY = f"bench-hash-key-{uuid.uuid4().hex}"

DONE_LUA = r"""
function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

LUA = r"""
local blocks = {%(blocks)s}
local token, interval, tag = "%(token)s", %(interval)f, "%(tag)s"
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("id", n)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  math.randomseed(id * 7919 + os.time())
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
end

function delay()
  if interval <= 0 then return 0 end
  -- uniform around the interval so connections do not fire in step
  return math.floor(interval * (0.5 + math.random()))
end

function request()
  counter = counter + 1
  local phone = blocks[math.random(#blocks)] .. string.format("%%04d", math.random(0, 9999))
  local ip = string.format("198.%%d.%%d.%%d",
    18 + math.random(0, 1), math.random(0, 255), math.random(1, 254))
  local body = string.format(
    '{"request_id":"%%s-%%d-%%d","phone":"%%s","client_ip":"%%s","session_id":"s%%d","flow":"login",' ..
    '"message":{"text":"Your code is %%06d"}}',
    tag, id, counter, phone, ip, math.random(0, 999999), math.random(0, 999999))
  return wrk.format("POST", "/v1/checks", headers, body)
end

%(done)s"""


# The HTTP stack's own ceiling in the same run: the service answering GET /healthz (no engine, no store).
HEALTHZ_LUA = r"""
wrk.path = "/healthz"
%(done)s"""


def lua_script(path: Path, interval_ms: float, tag: str) -> Path:
    blocks = ", ".join(f'"{block}"' for block in number_blocks())
    values = {"blocks": blocks, "token": TOKEN, "interval": interval_ms, "tag": tag, "done": DONE_LUA}
    path.write_text(LUA % values)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, connections: int, seconds: int, threads: int = 1) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"^RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@contextlib.contextmanager
def redis_store(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from detector.testing.services import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        yield server.url


@contextlib.contextmanager
def serve_process(
    store: str, port: int, batch_size: int, in_flight: int
) -> Iterator[subprocess.Popen[bytes]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DETECTOR_")}
    env.update({"DETECTOR_HASH_KEY": HASH_KEY, "DETECTOR_API_TOKENS": TOKEN, "DETECTOR_LOG_LEVEL": "WARNING"})
    argv = [sys.executable, "-m", "detector", "serve", "--store", store, "--port", str(port)]
    argv += ["--batch-size", str(batch_size), "--max-in-flight", str(in_flight)]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"detector serve exited {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("detector serve was not ready within 30 s")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def timed(pid: int, url: str, script: Path, connections: int, seconds: int) -> dict[str, Any]:
    """wrk's result, with the service's CPU per answer over the run."""
    cpu = cpu_seconds(pid)
    result = run_wrk(url, script, connections, seconds)
    result["cpu_us_per_check"] = (cpu_seconds(pid) - cpu) / result["requests"] * 1e6
    return result


def measure(args: argparse.Namespace, store: str, workdir: Path) -> dict[str, Any]:
    from detector.testing.services import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "connections": args.connections,
        "seconds": args.seconds,
        "rates": [],
    }
    with serve_process(store, port, args.batch_size, args.in_flight) as proc:
        run_wrk(url, lua_script(workdir / "warm.lua", 0, "warm"), 8, 3)  # JIT-free Python still warms caches
        for rate in args.rates:
            # Each connection sends every connections/rate seconds, less the ~1 ms it waits for an answer.
            interval_ms = max(0.0, 1000.0 * args.connections / rate - 1.0)
            script = lua_script(workdir / f"rate-{rate}.lua", interval_ms, f"r{rate}-{uuid.uuid4().hex[:6]}")
            result = timed(proc.pid, url, script, args.connections, args.seconds)
            result["offered"] = rate
            report["rates"].append(result)
            print(format_row(f"{rate:,}/s offered", result), flush=True)
        script = lua_script(workdir / "max.lua", 0, f"max-{uuid.uuid4().hex[:6]}")
        report["max"] = timed(proc.pid, url, script, args.max_connections, args.seconds)
        print(format_row("max (no delay)", report["max"]), flush=True)
        healthz = workdir / "healthz.lua"
        healthz.write_text(HEALTHZ_LUA % {"done": DONE_LUA})
        report["ceiling"] = timed(proc.pid, url, healthz, args.max_connections, args.seconds)
        print(format_row("GET /healthz", report["ceiling"]).replace("checks/s", "answers/s"), flush=True)
        print(
            f"{'ceiling':>18}  max checks/s = {report['max']['rate'] / report['ceiling']['rate']:.2f} x "
            "the same service's /healthz answers/s (its HTTP stack, no engine, no store)",
            flush=True,
        )
    report["load_after"] = os.getloadavg()[0]
    return report


def format_row(label: str, result: dict[str, Any]) -> str:
    return (
        f"{label:>18}  {result['rate']:>8,.0f} checks/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
        f"p90 {result['p90_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms  "
        f"max {result['max_us'] / 1000:7.1f} ms  non-2xx {result['non_2xx']}  "
        f"errors {result['socket_errors']}  "
        f"service CPU {result['cpu_us_per_check']:.0f} µs/check"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rates", default="500,1000,2000", help="offered loads, checks per second")
    parser.add_argument("--seconds", type=int, default=10, help="per rate")
    parser.add_argument(
        "--connections", type=int, default=128, help="for the paced rates: many, so latency slows each little"
    )
    parser.add_argument("--max-connections", type=int, default=64, help="for the unpaced maximum")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=1, help="the service's --max-in-flight")
    parser.add_argument("--store", default=os.environ.get("REDIS_URL"), help="redis://… (default: start one)")
    parser.add_argument("--json", dest="json_path", help="write the report here")
    args = parser.parse_args()
    args.rates = [int(rate) for rate in args.rates.split(",") if rate]
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/system-deps.sh (Debian's wrk)")
    print(
        f"detector serve on Redis (--max-in-flight {args.in_flight}), wrk -t1 -c{args.connections}, "
        f"{args.seconds} s per rate",
        flush=True,
    )
    with redis_store(args.store) as store, tempfile.TemporaryDirectory() as tmp:
        report = measure(args, store, Path(tmp))
    target = next((r for r in report["rates"] if r["offered"] == 1000), None)
    if target is not None:
        met = target["p99_us"] <= 10_000 and target["non_2xx"] == 0
        print(f"target p99 <= 10 ms at 1,000 checks/s: {'met' if met else 'NOT met'} "
              f"(p99 {target['p99_us'] / 1000:.2f} ms at {target['rate']:,.0f}/s)")  # fmt: skip
    print(f"{report['cores']} cores, load average {report['load_before']:.1f} before, "
          f"{report['load_after']:.1f} after")  # fmt: skip
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
