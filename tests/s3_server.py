"""A real S3 API server on loopback for the object-store tests: moto's server mode.

moto runs as a **separate process** (``python -m moto.server -H 127.0.0.1 -p PORT``).
Its in-process ``ThreadedMotoServer`` deadlocks with TensorFlow's S3 client (a
``tf.saved_model.save`` to it never returns), so it is not used.

TensorFlow reaches the server through tensorflow-io's S3 filesystem, configured
by environment variables (``S3Server.env``): ``S3_ENDPOINT``, ``S3_USE_HTTPS=0``,
``S3_VERIFY_SSL=0``, ``AWS_REGION`` and dummy credentials. ``boto3`` (with the
same settings) creates buckets and reads them back for assertions.

By hand, for a shell session against a throw-away server::

    .venv/bin/python tests/s3_server.py --bucket demo
    # prints the `export ...` lines to paste, then serves until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REGION = "us-east-1"
ACCESS_KEY = "tfx-servables-test"  # moto accepts any credentials
SECRET_KEY = "tfx-servables-test-secret"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """``python -m moto.server`` on 127.0.0.1, started and stopped by its owner."""

    def __init__(self, *, log_path: str | None = None, python: str = sys.executable):
        self.port: int | None = None
        self.log_path = log_path or os.path.join(tempfile.gettempdir(),
                                                 f"moto-{os.getpid()}-{time.time_ns()}.log")
        self._python = python
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("the S3 server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this server: tensorflow-io, AWS SDKs, boto3."""
        return {
            "S3_ENDPOINT": self.endpoint,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            # Never ask the EC2 instance-metadata service (169.254.169.254) for a
            # region or credentials: all traffic stays on loopback.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> S3Server:
        """Starts moto on a free port and waits until it answers; returns self."""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._process = subprocess.Popen(
                [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if not k.startswith("S3_")})
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"moto's S3 server did not start; its log ({self.log_path}):\n"
                           f"{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL); safe to call twice."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of moto's output, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-chars:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ boto3 side

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def create_bucket(self, name: str) -> str:
        """Creates bucket ``name``; returns ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket``, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def read(self, bucket: str, key: str) -> bytes:
        """The bytes of one object."""
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def main(argv: list[str] | None = None) -> int:
    """Runs a server in the foreground for manual use; prints the environment to export."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", action="append", default=[], help="bucket(s) to create")
    args = parser.parse_args(argv)
    with S3Server() as server:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        for key, value in server.env.items():
            print(f"export {key}={value}")
        print(f"# moto log: {server.log_path}; Ctrl-C stops the server", flush=True)
        try:
            while server._process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
