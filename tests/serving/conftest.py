"""One real vLLM server for the whole test run (``vllm`` tests only): the shipped default model
served by ``mmllm serve`` at a reduced budget on 127.0.0.1, started on first use."""

from pathlib import Path

import pytest

from mmllm.errors import MMLLMError

#: the served budget: the reduction runs inside the served model, and local chat runs the same
SERVED_REDUCTION = "divprune:16"


@pytest.fixture(scope="session")
def served_reduction() -> str:
    return SERVED_REDUCTION


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Base URL of a running `mmllm serve`; its log is printed if it fails to start."""
    from mmllm.serving.bench import ServerProcess
    from mmllm.serving.server import served_folder

    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    process = ServerProcess(served_folder(None), SERVED_REDUCTION, log_path)
    try:
        with process:
            yield process.url
    except MMLLMError as err:
        pytest.fail(f"{err}:\n{tail(log_path)}")


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
