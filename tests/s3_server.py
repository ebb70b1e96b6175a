"""A local S3 endpoint for tests: moto's server (moto[server]) as a subprocess on
127.0.0.1, with the AWS_* variables that boto3, s3fs and Beam's S3 filesystem read."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def moto_server(bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start moto_server, point the AWS_* environment at it (subprocesses and Beam workers
    inherit it), create `bucket`; yields the endpoint URL. Skips when it can't start."""
    executable = Path(sys.executable).with_name("moto_server")
    if not executable.exists():
        pytest.skip(f"{executable} is absent: install moto[server] to test an s3:// lake")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not _answers(url):
            if server.poll() is not None or time.time() > deadline:
                pytest.skip(f"moto_server did not start on {url} (exit code {server.poll()})")
            time.sleep(0.2)
        for key, value in {"AWS_ENDPOINT_URL": url, **CREDENTIALS}.items():
            monkeypatch.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket=bucket)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
