"""One real vLLM server for the whole test run (``vllm`` tests only): the shipped default model
served by ``mmllm serve`` at a reduced budget on 127.0.0.1, started on first use."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: the served budget: the reduction runs inside the served model, and local chat runs the same
SERVED_REDUCTION = "divprune:16"
START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def served_reduction() -> str:
    return SERVED_REDUCTION


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Base URL of a running `mmllm serve`; its log is printed if it fails to start."""
    import requests

    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    cmd = [sys.executable, "-m", "mmllm.cli", "serve", "--port", str(port),
           "--reduction", SERVED_REDUCTION, "--max-model-len", "1024"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # vLLM: real mode
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mmllm serve exited ({proc.returncode}):\n{tail(log_path)}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mmllm serve not up after {START_TIMEOUT_S} s:\n{tail(log_path)}")
            time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def server_pid(server):
    """PIDs of the server's process tree (API server, engine core, worker)."""
    import psutil

    port = int(server.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    pytest.fail("cannot find the server process")
