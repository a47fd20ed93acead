"""Pytest fixtures for the object-store tests: one moto S3 server per test session.

Registered from ``tests/conftest.py`` (``pytest_plugins``). ``s3_server`` starts
the server (``tests/s3_server.py``) the first time a test asks for it, puts its
settings (``S3_ENDPOINT``, ``S3_USE_HTTPS=0``, ``S3_VERIFY_SSL=0``, ``AWS_REGION``,
dummy credentials) into this process's environment, where subprocesses inherit
them, and stops it at the end of the session. ``s3_bucket`` gives each test a
fresh bucket.

A process that used tensorflow-io's S3 filesystem can abort at interpreter exit
("pure virtual method called", the AWS SDK's static destructors; tensorflow/io#2039,
unfixed in 0.37.1) after everything it did succeeded. So that pytest's own exit
code stays the verdict of the tests, a session that started the S3 server ends
its process with ``os._exit(<pytest's exit status>)`` once pytest is done
(after its summary is printed): the abort can neither fail a passing run nor turn
a failing run into a different code. Child processes are judged by their own
means (exit codes of processes that end with ``os._exit``, or explicit result
markers; see ``tests/test_object_store.py``).
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys

import pytest

from tests.s3_server import S3Server

_session_exit_status: list[int] = []
_exit_guard_registered: list[bool] = []
_bucket_numbers = itertools.count(1)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    """Remembers pytest's verdict for the exit guard."""
    _session_exit_status[:] = [int(exitstatus)]


def _exit_with_pytest_status() -> None:
    # Runs at interpreter exit, before TensorFlow's and the AWS SDK's teardown.
    if not _session_exit_status:
        return  # not after a finished pytest session: let Python exit normally
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream has nothing to flush
            pass
    os._exit(_session_exit_status[0])


def guard_process_exit() -> None:
    """Makes this (pytest) process exit with pytest's status, skipping native teardown."""
    if not _exit_guard_registered:
        atexit.register(_exit_with_pytest_status)
        _exit_guard_registered.append(True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """moto's S3 server on 127.0.0.1, its settings in os.environ for the whole session."""
    log = tmp_path_factory.getbasetemp() / "moto-s3.log"
    server = S3Server(log_path=str(log)).start()
    guard_process_exit()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in server.env.items():
                patch.setenv(key, value)
            yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket for this test; returns its name."""
    name = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    s3_server.create_bucket(name)
    return name


RESULT_MARKER = "TFX_SERVABLES_CHILD_RESULT "
_CHILD_EPILOGUE = f"""
import json as _json, os as _os, sys as _sys
_sys.stdout.write({RESULT_MARKER!r} + _json.dumps(result, default=str) + "\\n")
_sys.stdout.flush()
_sys.stderr.flush()
_os._exit(0)  # skip native teardown: tensorflow-io's S3 plugin can abort there
"""


class ChildFailed(AssertionError):
    """A child process did not print its result marker."""


def run_child(code: str, *, timeout: float = 300, cwd: str | None = None,
              env: dict[str, str] | None = None) -> object:
    """Runs ``code`` in a fresh Python process; returns the value it left in ``result``.

    The child is judged by an explicit marker, printed after ``code`` finished
    without an exception: a crash at interpreter exit cannot fail it, and an
    exception (no marker) cannot pass. ``code`` runs with the project on
    ``sys.path`` and this process's environment (the S3 settings included).
    """
    import json
    import subprocess

    from tests.s3_server import __file__ as _s3_server_file

    project = os.path.dirname(os.path.dirname(os.path.abspath(_s3_server_file)))
    program = f"import sys\nsys.path.insert(0, {project!r})\nresult = None\n{code}\n" \
              f"{_CHILD_EPILOGUE}"
    completed = subprocess.run(
        [sys.executable, "-c", program], cwd=cwd or project, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise ChildFailed(f"child process exited with {completed.returncode} without a result:\n"
                      f"--- stdout\n{completed.stdout[-3000:]}\n--- stderr\n"
                      f"{completed.stderr[-6000:]}")
