"""S3 clients for the services' endpoint and credentials: the one place they are built.

Provisioning (:mod:`provision`), ingest's presigner and the worker's storage all talk to the same
store with the same settings; building the clients here keeps endpoint, credentials, region and
timeouts in one spelling.
"""

from __future__ import annotations

import boto3
import urllib3
from botocore.client import BaseClient
from botocore.config import Config
from minio import Minio

from photoenhance.settings import Settings

__all__ = ["boto_client", "minio_client"]


def minio_client(settings: Settings, *, http_client: urllib3.PoolManager | None = None) -> Minio:
    """A minio client for the services' endpoint and credentials.

    ``http_client`` replaces minio's default connection pool (the worker sizes its own to its I/O
    threads, with short timeouts); without it minio builds its default one.
    """
    return Minio(
        settings.s3_host,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http_client,
    )


def boto_client(settings: Settings, service: str) -> BaseClient:
    """A boto3 client for ``service`` (``s3``, ``sns``) at the services' S3 endpoint and credentials."""
    return boto3.client(
        service,
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
    )
