"""FiftyOne on a private database: a mongod in a temporary folder, started once per test process.

FiftyOne reads its settings when it is first imported, so the environment is set here before any test
imports it (``fcos_lab.integrations.fiftyone`` imports it lazily). The in-process tests talk to their
own ``mongod`` through ``FIFTYONE_DATABASE_URI`` rather than FiftyOne's managed database service:
FiftyOne attaches to any running managed service of the same user, whatever its database folder, so two
xdist workers (or another FiftyOne user on the machine) would share one database. The managed service
itself is tested in a subprocess (``test_fiftyone.py``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
FIFTYONE_SPEC = importlib.util.find_spec("fiftyone")  # finds the package without importing it
if FIFTYONE_SPEC is None:
    message = "fiftyone is not installed (pip install -e '.[fiftyone]')"
    if IN_CI:
        raise RuntimeError(message + " but CI=true")
    pytest.skip(message, allow_module_level=True)

MONGOD = Path(FIFTYONE_SPEC.submodule_search_locations[0]) / "db" / "bin" / "mongod"
QUIET_ENV = {
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_DEFAULT_APP_ADDRESS": "127.0.0.1",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}


def isolated_env(folder: Path) -> dict[str, str]:
    """FiftyOne settings that keep the user's ~/.fiftyone configuration files out of the tests."""
    return {
        **QUIET_ENV,
        "FIFTYONE_CONFIG_PATH": str(folder / "config.json"),  # missing files: FiftyOne's defaults
        "FIFTYONE_APP_CONFIG_PATH": str(folder / "app_config.json"),
        "FIFTYONE_EVALUATION_CONFIG_PATH": str(folder / "evaluation_config.json"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``text`` (this test process excluded)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid != os.getpid() and text in " ".join(process.info["cmdline"] or []):
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
        except psutil.Error:
            pass
    return found


def wait_gone(text: str, timeout: float = 30.0) -> list[psutil.Process]:
    """Wait until no process mentions ``text``; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start_mongod(folder: Path) -> tuple[subprocess.Popen, int]:
    """FiftyOne's bundled mongod on a free localhost port with its data in ``folder``."""
    (folder / "db").mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [str(MONGOD), "--dbpath", str(folder / "db"), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(folder / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = (folder / "mongod.log").read_text()[-2000:] if (folder / "mongod.log").exists() else ""
                raise RuntimeError(f"mongod did not start (exit {process.poll()}): {log}") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def fiftyone_database(tmp_path_factory):
    """A private mongod for this test process, with FiftyOne pointed at it; stopped and checked at the end.

    Yields the environment (a dict) that subprocesses need to use the same database.
    """
    folder = tmp_path_factory.mktemp("fiftyone")
    process, port = start_mongod(folder)
    env = {**isolated_env(folder), "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}/",
           "FIFTYONE_DATABASE_DIR": str(folder / "unused-managed-db")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    if "fiftyone" in sys.modules:  # imported before the environment was set: it would use another database
        import fiftyone as fo

        if fo.config.database_uri != env["FIFTYONE_DATABASE_URI"]:
            process.kill()
            pytest.fail(f"fiftyone was imported before the test database was set up (uses {fo.config.database_uri})")
    try:
        yield env
    finally:
        if "fiftyone" in sys.modules:
            import fiftyone.core.odm.database as fodb

            # Without a client FiftyOne's atexit clean-up returns at once instead of waiting 30 s for the
            # stopped server.
            fodb._disconnect()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        left = wait_gone(str(folder))
        assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
        shutil.rmtree(folder / "db")  # mongod preallocates about 300 MB


@pytest.fixture
def fo(fiftyone_database):
    """The fiftyone module, on the private database."""
    import fiftyone

    return fiftyone
