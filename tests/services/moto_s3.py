"""moto's standalone S3 server on 127.0.0.1, spoken to over HTTP by boto3.

The server runs in a subprocess (``python -m moto.server``), so that what the
tests measure in their own process (memory, threads) is the client's alone.
Dummy credentials go to each client built here, never into ``os.environ``.

Fixtures (registered through ``pytest_plugins`` in ``tests/conftest.py``):

- ``moto_s3``: the session's server (a MotoServer).
- ``moto_s3_bucket``: a fresh, uniquely named bucket on it, emptied and removed afterwards.
- ``moto_s3_auth``: a second server that checks signatures and permissions, with one
  IAM user allowed ``s3:*`` whose keys are its ``.access_key_id`` / ``.secret_access_key``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

DUMMY_KEY = "testing"
DUMMY_SECRET = "testing"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """One ``moto.server`` subprocess; ``start()`` returns once it answers GET /moto-api/."""

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        self.extra_env = dict(env or {})
        self.port = 0
        self.endpoint_url = ""
        self.process: subprocess.Popen | None = None
        # The server's output, for the error message if it does not start; closed in stop().
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.access_key_id = DUMMY_KEY
        self.secret_access_key = DUMMY_SECRET

    def start(self, timeout: float = 30.0) -> MotoServer:
        """Start on a free port, trying again on another if the port was taken meanwhile."""
        for _attempt in range(3):
            self.port = free_port()
            self.endpoint_url = f"http://127.0.0.1:{self.port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(self.extra_env)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
        self.log.seek(0)
        tail = self.log.read()[-2000:].decode("utf-8", "replace")
        self.log.close()
        raise RuntimeError(f"moto server did not start; its output:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the server this object started (by its own PID) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop the server and drop its output."""
        self.stop()
        self.log.close()

    def client(
        self,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        service: str = "s3",
        **config: Any,
    ) -> Any:
        """A boto3 client for this server; ``config`` goes to botocore's Config.

        The client is built as ``storage.s3.make_client`` builds one for a
        custom endpoint (checksums only where required).
        """
        config.setdefault("request_checksum_calculation", "when_required")
        config.setdefault("response_checksum_validation", "when_required")
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            region_name=REGION,
        )
        return session.client(service, endpoint_url=self.endpoint_url, config=Config(**config))


def new_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:24]}"


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Abort pending multipart uploads, delete every object, then the bucket."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", ()):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoServer]:
    """moto's S3 server for the whole session (state is per bucket: use moto_s3_bucket)."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def moto_s3_bucket(moto_s3: MotoServer) -> Iterator[str]:
    """The name of a new, empty bucket on ``moto_s3``; removed with its content afterwards."""
    client = moto_s3.client()
    bucket = new_bucket_name()
    client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        with contextlib.suppress(client.exceptions.NoSuchBucket):
            empty_and_delete_bucket(client, bucket)
        client.close()


@pytest.fixture(scope="session")
def moto_s3_auth() -> Iterator[MotoServer]:
    """A moto server that checks signatures and IAM permissions.

    moto lets the first INITIAL_NO_AUTH_ACTION_COUNT requests through
    unchecked: three, spent here on the IAM user, its policy and its access key.
    """
    server = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}).start()
    try:
        iam = server.client(service="iam")
        iam.create_user(UserName="cloudpypi-test")
        iam.put_user_policy(
            UserName="cloudpypi-test",
            PolicyName="s3-all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="cloudpypi-test")["AccessKey"]
        iam.close()
        server.access_key_id = key["AccessKeyId"]
        server.secret_access_key = key["SecretAccessKey"]
        yield server
    finally:
        server.close()
