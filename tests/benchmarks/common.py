"""What every benchmark shares: result rows, fresh processes, servers, databases, profiling."""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import os
import pstats
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "BENCH-RESULT "
READY_PREFIX = "READY "
STATS_PREFIX = "STATS "
PROFILE_VARIABLE = "FLATTRFED_BENCH_PROFILE"
LOOPBACK = "127.0.0.1"
# The public origin every benchmark instance answers to; requests reach it on 127.0.0.1:PORT
# with this Host header, so signed requests do not depend on the port a server got.
BENCH_BASE_URL = "http://bench.test"
BENCH_HOST = "bench.test"

# Baselines are cheap, so each is measured this many times and its best run is used: the best
# run is the one least disturbed by whatever else the machine is doing. Ours is measured once,
# over a longer stretch.
BASELINE_RUNS = 2

Scale = Literal["small", "full"]
Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")
NO_POSTGRES = "skipped: no PostgreSQL URL (--postgres or FLATTRFED_TEST_POSTGRES_URL)"


class BenchError(RuntimeError):
    """A benchmark could not produce its figure (a child failed, timed out, or saw errors)."""


# --- result rows -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report: our figure, the baseline's, their ratio, and peak memory.

    `ratio` is ours/baseline for rates and ours/baseline for times as well; `target` says which
    direction is good (e.g. ">= 0.4" for a rate, "<= 10" for a time).
    """

    id: str
    variant: str
    what: str
    unit: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str
    met: bool | None
    peak_rss_mib: float | None
    baseline_peak_rss_mib: float | None = None
    status: Literal["ok", "skipped", "failed"] = "ok"
    scale: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(bench_id: str, variant: str, what: str, target: str, why: str) -> Row:
    return Row(
        bench_id,
        variant,
        what,
        "",
        None,
        None,
        None,
        target,
        None,
        None,
        status="skipped",
        notes=[why],
    )


def failed(bench_id: str, variant: str, what: str, target: str, why: str) -> Row:
    return Row(
        bench_id,
        variant,
        what,
        "",
        None,
        None,
        None,
        target,
        None,
        None,
        status="failed",
        notes=[why],
    )


def ratio_of(ours: float | None, baseline: float | None) -> float | None:
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline


def at_least(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio >= target


def at_most(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio <= target


# --- memory ------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mib(pid: int | str, field: str) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def vm_hwm_mib(pid: int) -> float | None:
    """Another live process's peak RSS, from /proc (None when it is gone)."""
    return _status_mib(pid, "VmHWM")


def rss_now_mib() -> float | None:
    """This process's resident set size now."""
    return _status_mib("self", "VmRSS")


# --- fresh processes ---------------------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark child: ours without any instance settings (`make` exports
    FLATTRFED_BASE_URL and friends for `make run`), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FLATTRFED_")
        or key in ("FLATTRFED_TEST_POSTGRES_URL", PROFILE_VARIABLE)
    }
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONHASHSEED", None)
    env.update(extra or {})
    return env


def _kill_group(process: subprocess.Popen[Any]) -> None:
    """End a child we started and whatever it started (its own process group), by its id."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_child(
    target: str,
    args: Mapping[str, Any],
    *,
    timeout: float,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run `module:function(**args)` in a fresh Python process; return its JSON result.

    The child's own peak RSS comes back as `_peak_rss_mib`. On a time-out the child and
    everything it started are killed and BenchError is raised.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{target.replace(':', '.').rsplit('.', 1)[-1]}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "tests.benchmarks.child", target, json.dumps(dict(args))]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(env),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise BenchError(f"{target} did not finish within {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                _kill_group(process)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise BenchError(
        f"{target} exited with {process.returncode} and no result; its log ends:\n"
        + _tail(log_path)
    )


class ServerProcess:
    """A server under test (or a baseline server, or a sink) in a process of its own.

    It prints `READY <port>` once listening on 127.0.0.1, and `STATS <json>` (with its peak
    RSS) after SIGTERM has stopped it.
    """

    def __init__(
        self, args: list[str], *, log_dir: Path, name: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = args
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stats: dict[str, Any] = {}

    def _pump(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def start(self, timeout: float = 60) -> ServerProcess:
        command = [sys.executable, "-m", "tests.benchmarks.server", *self.args]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=child_env(self.env),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                raise BenchError(f"{self.name} did not start within {timeout:.0f} s") from None
            if line is None:
                raise BenchError(f"{self.name} exited while starting:\n{_tail(self.log_path)}")
            if line.startswith(READY_PREFIX):
                self.port = int(line[len(READY_PREFIX) :])
                return self

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        """SIGTERM, wait for the STATS line; kill the process group if it hangs."""
        if self.process is None:
            return {}
        hwm = vm_hwm_mib(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith(STATS_PREFIX):
                self.stats = json.loads(line[len(STATS_PREFIX) :])
        self.kill()
        self.stats.setdefault("peak_rss_mib", hwm)
        return self.stats

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            _kill_group(self.process)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# --- instances and databases -------------------------------------------------------------------


def instance_environ(data_dir: Path, database_url: str, **overrides: str) -> dict[str, str]:
    """FLATTRFED_* settings of a benchmark instance at BENCH_BASE_URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    environ = {
        "FLATTRFED_BASE_URL": BENCH_BASE_URL,
        "FLATTRFED_ALLOW_HTTP": "1",
        "FLATTRFED_DATA_DIR": str(data_dir),
        "FLATTRFED_DATABASE_URL": database_url,
        "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.0/8",
        "FLATTRFED_WORKER_IN_PROCESS": "0",
        "FLATTRFED_INSTANCE_NAME": "bench",
        "FLATTRFED_LOG_LEVEL": "INFO",
        "FLATTRFED_LOG_FORMAT": "json",
    }
    environ.update(overrides)
    return environ


class Databases:
    """Fresh migrated databases on one backend, dropped again at the end (PostgreSQL)."""

    def __init__(self, workdir: Path, backend: Backend, postgres_url: str | None) -> None:
        from tests.harness.databases import DatabaseFactory

        if backend == "postgresql" and not postgres_url:
            raise BenchError("PostgreSQL benchmark without a PostgreSQL URL")
        workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.factory = DatabaseFactory(workdir, postgres_url if backend == "postgresql" else None)
        self._prepared = False

    async def new(self, label: str) -> str:
        if not self._prepared:
            await self.factory.prepare()
            self._prepared = True
        return await self.factory.new_database(label)

    async def drop_all(self) -> None:
        if self._prepared:
            await self.factory.drop_all()


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


# --- timing and profiling ----------------------------------------------------------------------


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def profiling() -> bool:
    return bool(os.environ.get(PROFILE_VARIABLE))


@contextlib.contextmanager
def profiled(name: str) -> Iterator[None]:
    """cProfile the block when FLATTRFED_BENCH_PROFILE names a folder (figures get slower)."""
    folder = os.environ.get(PROFILE_VARIABLE)
    if not folder:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        write_profile(profile, Path(folder), name)


def write_profile(profile: cProfile.Profile, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    profile.dump_stats(folder / f"{name}.prof")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)
    (folder / f"{name}.txt").write_text(out.getvalue())


async def run_worker_for(worker: Any, limit: float) -> tuple[int, float]:
    """Run `worker` (a flattrfed Worker) batch by batch until nothing is due or `limit` seconds
    have passed; return how many jobs ran and how long it took."""
    ran = 0
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        done = await worker.run_once()
        if done == 0:
            break
        ran += done
    return ran, time.perf_counter() - started


def product_logging() -> None:
    """Log as `flattrfed serve` does (JSON at INFO to stderr), so its cost is in the figures."""
    from flattrfed.logs import configure_logging

    configure_logging(
        os.environ.get("FLATTRFED_LOG_LEVEL", "INFO"),
        os.environ.get("FLATTRFED_LOG_FORMAT", "json"),
    )
