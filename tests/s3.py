"""A real S3-compatible server for the tests of model files at ``s3://`` URIs: moto's server mode, started in the
test's process on a free loopback port (``s3_bucket``), and what a server is given to reach it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from stevedore_server.kit.loopback import free_ports

#: moto takes any credentials; a pod is given some.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@dataclass(frozen=True)
class Bucket:
    """A bucket of the S3 server at ``endpoint``."""

    endpoint: str
    name: str
    server: ThreadedMotoServer

    @property
    def environment(self) -> dict[str, str]:
        """What a server is given to reach the store, as a pod is."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": CREDENTIALS["region_name"],
        }

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, **CREDENTIALS)

    def upload(self, path: Path, key: str) -> None:
        """The file ``path`` as ``key``, or every file under the folder ``path`` under the prefix ``key``, as
        ``aws s3 cp --recursive`` does."""
        client = self.client()
        if path.is_file():
            client.upload_file(str(path), self.name, key)
            return
        for item in sorted(path.rglob("*")):
            if item.is_file():
                client.upload_file(str(item), self.name, f"{key}/{item.relative_to(path).as_posix()}")


@contextlib.contextmanager
def s3_bucket(name: str) -> Iterator[Bucket]:
    """moto's S3 server, started in this process on a free loopback port, holding an empty bucket ``name``;
    stopped at the end (a test may stop it sooner: ``bucket.server.stop()``)."""
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        bucket = Bucket(f"http://127.0.0.1:{port}", name, server)
        bucket.client().create_bucket(Bucket=name)
        yield bucket
    finally:
        with contextlib.suppress(Exception):  # stopped already by the test
            server.stop()
