"""Real Kafka and Redis servers on loopback, for tests and for ``make services``.

Nothing here is mocked. The Kafka broker is Apache Kafka itself (KRaft, one node acting as
broker and controller), its jars fetched once from Maven Central by ``deploy/kafka/pom.xml``
into ``.cache/kafka/lib`` (or ``$DETECTOR_CACHE_DIR/kafka/lib``). Redis is Debian's
``redis-server``.

Library use::

    with KafkaBroker(tmp / "kafka") as kafka, RedisServer(tmp / "redis") as redis:
        kafka.bootstrap   # "127.0.0.1:NNNN"
        redis.url         # "redis://127.0.0.1:NNNN/0"
        redis.stop(); redis.start()   # same port again

Command line::

    python -m detector.testing.services up      # start both, detached; prints and writes the variables
    python -m detector.testing.services env     # print them again, as export lines
    python -m detector.testing.services down    # stop both
    python -m detector.testing.services fetch   # only fetch the Kafka jars

Apart from :func:`create_topic` (which uses aiokafka) this module uses only the standard library.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from detector.errors import DetectorError

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
# State of `up` / `down` (pid files, addresses, logs); $DETECTOR_SERVICES_DIR overrides.
SERVICES_DIR = Path(os.environ.get("DETECTOR_SERVICES_DIR") or REPO_ROOT / ".cache" / "services").resolve()
HOST = "127.0.0.1"

KAFKA_HEAP = "512m"
KAFKA_START_TIMEOUT = 90.0
REDIS_START_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.1


class ServiceError(DetectorError):
    """A server could not be fetched, started or reached."""


# --------------------------------------------------------------------------- helpers


def cache_dir() -> Path:
    """Where downloaded things live: ``$DETECTOR_CACHE_DIR`` or ``<repo>/.cache``."""
    configured = os.environ.get("DETECTOR_CACHE_DIR")
    return Path(configured).expanduser().resolve() if configured else REPO_ROOT / ".cache"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass.

    ``alive`` is asked between polls; if it returns a message the wait fails at once
    (e.g. the server process has exited), instead of running out the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        problem = alive()
        if problem is not None:
            raise ServiceError(f"{what}: {problem}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(POLL_INTERVAL)


_PROBLEM_MARKERS = ("ERROR", "FATAL", "Caused by", "Could not", "Address already in use")


def _log_excerpt(path: Path, problems: int = 8, tail: int = 10) -> str:
    """The first error-looking lines of a log plus its last lines, for error messages."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no {path})"
    flagged = [line for line in lines if any(marker in line for marker in _PROBLEM_MARKERS)]
    parts = [f"--- {path}"]
    if flagged:
        parts += ["first problems:", *flagged[:problems], "last lines:"]
    return "\n".join(parts + lines[-tail:])


def _pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _terminate(pid: int, timeout: float, reap: Callable[[float], bool] | None = None) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` for it to exit, then SIGKILL it.

    ``reap(seconds)`` waits for our own child (Popen.wait); for other processes we poll.
    """

    def gone(seconds: float) -> bool:
        if reap is not None:
            return reap(seconds)
        deadline = time.monotonic() + seconds
        while _pid_running(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    for sig, wait_for in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            gone(1.0)  # reap our child if it already exited
            return
        if gone(wait_for):
            return
    raise ServiceError(f"process {pid} survived SIGKILL")


class _ServerProcess:
    """A server process started from Python and stopped with SIGTERM, then SIGKILL."""

    name = "server"

    def __init__(self, workdir: Path, detach: bool) -> None:
        self.workdir = Path(workdir).resolve()
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: list[str], output: Path) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with output.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Detached servers outlive this Python process and ignore the terminal's Ctrl-C.
                start_new_session=self.detach,
            )
        if not self.detach:
            atexit.register(self.stop)

    def _exit_problem(self, *logs: Path) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            tails = "\n".join(_log_excerpt(log) for log in logs)
            return f"{self.name} exited with code {self.proc.returncode}\n{tails}"
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``). Safe to call twice."""
        atexit.unregister(self.stop)
        proc, self.proc = self.proc, None
        if proc is None:
            return

        def reap(seconds: float) -> bool:
            try:
                proc.wait(seconds)
            except subprocess.TimeoutExpired:
                return False
            return True

        if proc.poll() is None:
            _terminate(proc.pid, timeout, reap)

    # Subclasses say which ports they listen on and how to start once on them.
    start_timeout = 30.0

    def _ports_chosen(self) -> bool:
        raise NotImplementedError

    def _choose_ports(self) -> None:
        raise NotImplementedError

    def _start_once(self, timeout: float) -> None:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> None:
        """Start the server and return once it answers; a no-op while it runs.

        The first start picks free loopback ports (unless given); later starts reuse them.
        Should another process grab a picked port before the server binds it, new ones are picked.
        """
        if self.running:
            return
        picking = not self._ports_chosen()
        for attempt in range(1, 4):
            if picking:
                self._choose_ports()
            try:
                self._start_once(timeout or self.start_timeout)
                return
            except ServiceError as err:
                if not (picking and attempt < 3 and "Address already in use" in str(err)):
                    raise

    def __enter__(self) -> Self:
        """Start the server (unless it already runs); leaving the block stops it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- Kafka jars


def kafka_lib_dir() -> Path:
    return cache_dir() / "kafka" / "lib"


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()


def ensure_kafka_jars(quiet: bool = True) -> Path:
    """The directory holding Kafka's runtime jars, running Maven first if they are not cached.

    The cache is keyed by the pom's content: editing ``deploy/kafka/pom.xml`` (say, the
    Kafka version) refetches. Concurrent callers wait on a lock instead of fetching twice.
    """
    if not KAFKA_POM.is_file():
        raise ServiceError(f"{KAFKA_POM} is missing: Kafka is fetched from a checkout of the repository")
    lib = kafka_lib_dir()
    stamp = lib / ".pom-sha256"
    digest = _pom_digest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with (lib.parent / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return lib  # another process fetched while we waited
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError("Maven (mvn) is not on PATH; it is needed once to fetch Kafka's jars")
        staging = lib.parent / f"lib.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        argv = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(KAFKA_POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        if not quiet:
            print(f"fetching Kafka jars into {lib} ...", file=sys.stderr)
        started = time.monotonic()
        result = subprocess.run(argv, cwd=KAFKA_POM.parent, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise ServiceError(
                f"fetching Kafka jars failed ({' '.join(argv)}):\n{result.stdout}\n{result.stderr}"
            )
        (staging / stamp.name).write_text(digest + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        if not quiet:
            print(f"fetched Kafka jars in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return lib


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError("java is not on PATH (Kafka needs Java 17)")
    return java


# --------------------------------------------------------------------------- Kafka


def kafka_cluster_id() -> str:
    """A random cluster id in Kafka's format (URL-safe base64 of 16 bytes, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka refuses ids that look like command-line flags
            return text


def _escape_property(value: str) -> str:
    """``value`` as Java reads it back from a .properties file (backslash is the escape)."""
    return value.replace("\\", "\\\\")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def kafka_broker_count(bootstrap: str, timeout: float = 2.0) -> int:
    """Send one Kafka Metadata request (v1) and return how many live brokers it lists.

    Raises OSError if nobody answers. A broker in KRaft mode only opens its client port once it
    has caught up with the metadata log, and only lists itself once it is unfenced, so ``>= 1``
    means clients can use it.
    """
    host, _, port = bootstrap.rpartition(":")
    client_id = b"detector-services"
    correlation_id = 1
    # Request header v1 (api_key=3 Metadata, version 1, correlation id, client id),
    # then the body: an empty topic list (v1+: "no topics", we only want the brokers).
    request = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
    got_id, brokers = struct.unpack_from(">ii", response, 0)
    if got_id != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got_id}")
    return int(brokers)


def _kafka_answers(bootstrap: str) -> bool:
    try:
        return kafka_broker_count(bootstrap) >= 1
    except (OSError, struct.error):
        return False


class KafkaBroker(_ServerProcess):
    """One Apache Kafka 3.9 node in KRaft mode (broker + controller) on loopback ports.

    ``workdir`` holds ``server.properties``, the data (``data/``) and the logs (``logs/``:
    ``server.log`` from log4j, ``console.log`` for anything the JVM prints). Storage is
    formatted on the first start only, so ``stop()`` then ``start()`` keeps topics and uses
    the same ports.
    """

    name = "Kafka"
    start_timeout = KAFKA_START_TIMEOUT

    def __init__(
        self,
        workdir: Path,
        port: int = 0,
        controller_port: int = 0,
        heap: str = KAFKA_HEAP,
        detach: bool = False,
    ) -> None:
        super().__init__(workdir, detach)
        self.port = port
        self.controller_port = controller_port
        self.heap = heap

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def server_properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            # 4 instead of 50 partitions: the first consumer group is ready much sooner.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        lines = [f"{key}={_escape_property(value)}" for key, value in settings.items()]
        return "# Written by detector.testing.services; rewritten on every start.\n" + "\n".join(lines) + "\n"

    def log4j_properties(self) -> str:
        log_file = _escape_property(str(self.logs_dir / "server.log"))
        return "\n".join(
            [
                "log4j.rootLogger=INFO, file",
                "log4j.appender.file=org.apache.log4j.FileAppender",
                f"log4j.appender.file.File={log_file}",
                "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                "log4j.logger.kafka.request.logger=WARN",
                "log4j.logger.state.change.logger=WARN",
                "log4j.logger.org.apache.kafka.clients=WARN",
                "",
            ]
        )

    def _java_argv(self, main_class: str, *args: str, short_lived: bool = False) -> list[str]:
        lib = ensure_kafka_jars()
        jvm = [
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={(self.workdir / 'log4j.properties').as_uri()}",
            f"-Dkafka.logs.dir={self.logs_dir}",
        ]
        if short_lived:
            # The formatter runs for a second: skip the optimising JIT and big heaps.
            jvm += ["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        else:
            jvm += [f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        return [_java(), *jvm, "-cp", str(lib / "*"), main_class, *args]

    def _ports_chosen(self) -> bool:
        return bool(self.port and self.controller_port)

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()

    def _start_once(self, timeout: float) -> None:
        """Format storage if needed, start the JVM and wait until it answers Metadata requests."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text(self.server_properties())
        (self.workdir / "log4j.properties").write_text(self.log4j_properties())
        console = self.logs_dir / "console.log"

        if not (self.data_dir / "meta.properties").exists():
            fmt = self._java_argv(
                "kafka.tools.StorageTool", "format", "--ignore-formatted",
                "-t", kafka_cluster_id(), "-c", str(config), short_lived=True,
            )  # fmt: skip
            result = subprocess.run(fmt, cwd=self.workdir, capture_output=True, text=True, check=False)
            (self.logs_dir / "format.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

        self._spawn(self._java_argv("kafka.Kafka", str(config)), console)
        try:
            wait_until(
                lambda: _kafka_answers(self.bootstrap),
                timeout,
                f"Kafka on {self.bootstrap}",
                alive=lambda: self._exit_problem(self.logs_dir / "server.log", console),
            )
        except BaseException:
            self.stop()
            raise


def start_kafka(workdir: Path, detach: bool = False) -> KafkaBroker:
    """Start a fresh single-node Kafka in ``workdir`` and return it, ready for clients."""
    broker = KafkaBroker(workdir, detach=detach)
    broker.start()
    return broker


async def create_topic(bootstrap: str, name: str, partitions: int = 4, timeout: float = 30.0) -> None:
    """Create ``name`` with ``partitions`` partitions and wait until every partition has a leader."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + timeout
        while True:
            (described,) = await admin.describe_topics([name])
            parts = described.get("partitions", [])
            if (
                described.get("error_code") == 0
                and len(parts) == partitions
                and all(p.get("leader", -1) >= 0 for p in parts)
            ):
                return
            if time.monotonic() >= deadline:
                raise ServiceError(f"topic {name} not ready after {timeout:.0f}s: {described}")
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- Redis


def redis_ping(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """True if a Redis server on ``host:port`` answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_ServerProcess):
    """A throwaway ``redis-server`` on a loopback port: no persistence, logs in ``workdir``.

    ``stop()`` then ``start()`` brings it back on the same port (empty, since nothing is saved),
    which is what outage tests need.
    """

    name = "redis-server"
    start_timeout = REDIS_START_TIMEOUT

    def __init__(self, workdir: Path, port: int = 0, detach: bool = False) -> None:
        super().__init__(workdir, detach)
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.workdir / "redis.log"

    def _ports_chosen(self) -> bool:
        return bool(self.port)

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _start_once(self, timeout: float) -> None:
        """Start redis-server on ``self.port`` and wait for PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed; run `make system-deps`")
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_file),
        ]  # fmt: skip
        console = self.workdir / "console.log"
        self._spawn(argv, console)
        try:
            wait_until(
                lambda: redis_ping(self.port),
                timeout,
                f"redis-server on port {self.port}",
                alive=lambda: self._exit_problem(self.log_file, console),
            )
        except BaseException:
            self.stop()
            raise


def start_redis(workdir: Path, port: int = 0, detach: bool = False) -> RedisServer:
    """Start a redis-server in ``workdir`` (on ``port``, or a free one) and return it, answering PING."""
    server = RedisServer(workdir, port=port, detach=detach)
    server.start()
    return server


# --------------------------------------------------------------------------- `up` / `down`

_MARKERS = {"kafka": "kafka.Kafka", "redis": "redis-server"}


def _pid_file(name: str) -> Path:
    return SERVICES_DIR / f"{name}.pid"


def _env_file() -> Path:
    return SERVICES_DIR / "services.env"


def _our_pid(name: str) -> int | None:
    """The pid recorded for service ``name``, if that process is still running and is ours."""
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if _pid_running(pid) and _MARKERS[name] in cmdline else None


def services_up() -> None:
    """Start Kafka and Redis detached under ``.cache/services``; print and write the variables to use them."""
    if all(_our_pid(name) for name in _MARKERS) and _env_file().is_file():
        print("# already running (`make services-stop` stops them)")
        print(_env_file().read_text(), end="")
        return
    services_down(quiet=True)
    shutil.rmtree(SERVICES_DIR, ignore_errors=True)
    SERVICES_DIR.mkdir(parents=True)
    ensure_kafka_jars(quiet=False)
    started = time.monotonic()
    redis = start_redis(SERVICES_DIR / "redis", detach=True)
    _pid_file("redis").write_text(f"{redis.pid}\n")
    try:
        kafka = start_kafka(SERVICES_DIR / "kafka", detach=True)
    except BaseException:
        services_down(quiet=True)
        raise
    _pid_file("kafka").write_text(f"{kafka.pid}\n")
    env = "".join(f"{name}={value}\n" for name, value in local_env(kafka.bootstrap, redis.url).items())
    _env_file().write_text(env)
    _env_file().chmod(0o600)  # it holds a hash key
    print(f"# Kafka and Redis up in {time.monotonic() - started:.1f}s; logs in {SERVICES_DIR}")
    print(f"# written to {_env_file()}: `set -a; . {_env_file()}; set +a`; `make services-stop` stops them")
    print(env, end="")


def local_env(bootstrap: str, redis_url: str) -> dict[str, str]:
    """The variables `detector` reads, for these servers, and the tests' own (KAFKA_BOOTSTRAP, REDIS_URL).

    The hash key is a new random one: fine for trying things out, where nothing outlives the servers.
    """
    ledger = redis_url.rsplit("/", 1)[0] + "/1"  # the send ledger in a database of its own
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "REDIS_URL": redis_url,
        "DETECTOR_KAFKA_BROKERS": bootstrap,
        "DETECTOR_STORE": redis_url,
        "DETECTOR_SEND_LEDGER": ledger,
        "DETECTOR_HASH_KEY": secrets.token_hex(32),
    }


def services_env() -> int:
    if all(_our_pid(name) for name in _MARKERS) and _env_file().is_file():
        print("".join(f"export {line}\n" for line in _env_file().read_text().splitlines()), end="")
        return 0
    print("# services are not running; start them with `make services`", file=sys.stderr)
    return 1


def services_down(quiet: bool = False) -> None:
    """Stop whatever ``services_up`` started."""
    for name in ("kafka", "redis"):
        pid = _our_pid(name)
        if pid is not None:
            _terminate(pid, STOP_TIMEOUT)
            if not quiet:
                print(f"stopped {name} (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            _pid_file(name).unlink()
    with contextlib.suppress(FileNotFoundError):
        _env_file().unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detector.testing.services",
        description="Run a real Kafka (KRaft) broker and redis-server on loopback for development.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "env", "fetch"],
        help="up: start both detached, print and write the variables to use them; down: stop them; "
        "env: print `export` lines for running services; fetch: only fetch the Kafka jars",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            services_up()
        elif args.command == "down":
            services_down()
        elif args.command == "env":
            return services_env()
        else:
            print(ensure_kafka_jars(quiet=False))
    except ServiceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
