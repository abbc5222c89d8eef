"""The benchmark server subprocess, seen from the parent: a free port, TLS trust, readiness, its CPU and
memory, stopping."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.webhook.common import BASELINE, HOST, REPO, BenchmarkError

READY_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3


def free_port() -> int:
    # Another process may take the port between this close and the server's bind: start() retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def client_context(ca_file: Path) -> ssl.SSLContext:
    # Verifies the server certificate against the throwaway CA, as the API server does with caBundle.
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


def _healthy(port: int, context: ssl.SSLContext) -> bool:
    connection = http.client.HTTPSConnection(HOST, port, context=context, timeout=2.0)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn shuts down gracefully on SIGTERM
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_TICKS = os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """The benchmark server subprocess; always stopped on leaving the `with` block.

    ``stack``: one of ``STACKS``, served from this tree; or ``BASELINE``, the benchmark server of the
    tree at ``tree`` (another commit's checkout: its own code, its own server module, asyncio).
    """

    def __init__(self, workdir: Path, stack: str, tree: Path | None = None) -> None:
        self._workdir = workdir
        self.stack = stack
        self._tree = tree or REPO
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.context: ssl.SSLContext | None = None

    def __enter__(self) -> ServerProcess:
        try:
            for attempt in range(START_ATTEMPTS):
                if self._start(attempt):
                    return self
        except BaseException:
            self.__exit__()
            raise
        raise BenchmarkError(f"the server did not start in {START_ATTEMPTS} attempts")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            stop(self._process)
            self._process = None

    def _start(self, attempt: int) -> bool:
        tls_dir = self._workdir / f"{self.stack}-tls-{attempt}"
        tls_dir.mkdir()
        log_path = self._workdir / f"{self.stack}-server-{attempt}.log"
        self.port = free_port()
        command = [sys.executable, "-m", "benchmarks.webhook", "--serve-port", str(self.port)]
        command += ["--tls-dir", str(tls_dir)]
        command += ["--server-loop", "asyncio"] if self.stack == BASELINE else ["--stack", self.stack]
        with log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches only the benchmark, which then stops the server
            # itself, instead of both tearing down at once mid-request.
            self._process = subprocess.Popen(
                command, cwd=self._tree, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.context = self._wait_ready(tls_dir / "ca.crt")
        if self.context is not None:
            return True
        stop(self._process)
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"server attempt {attempt + 1} on port {self.port} failed:\n{tail}", file=sys.stderr)
        return False

    def _wait_ready(self, ca_file: Path) -> ssl.SSLContext | None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            # tls.key is written last: once it exists the CA is complete and can be trusted.
            if (ca_file.parent / "tls.key").exists():
                context = client_context(ca_file)
                if _healthy(self.port, context):
                    return context
            time.sleep(0.05)
        return None

    def cpu_seconds(self) -> float:
        """User and system CPU the server process has used so far, all its threads together."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)

    def rss_bytes(self) -> int:
        assert self._process is not None
        for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
