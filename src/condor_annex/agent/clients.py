"""boto3 clients for the agent, with the instance role's credentials.

Standard library only at import time: boto3 and botocore are imported when the clients are made
(the distribution's python3-boto3 on the instance).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from condor_annex.agent.errors import NotYet


class AwsClients:
    """boto3 clients for EC2, IAM and S3 using the instance role's credentials.

    boto3's default credential chain ends with the instance metadata provider; we point it at
    ``imds_url`` through the environment (``AWS_EC2_METADATA_SERVICE_ENDPOINT``; botocore reads
    ``AWS_EC2_METADATA_DISABLED`` only from the environment) and forbid its IMDSv1 fallback. The
    process is the agent alone, and :func:`condor_annex.agent.bootstrap.main` restores the
    environment when it returns.

    Args:
        session: a ``boto3.session.Session`` in the instance's region.
        endpoint_url: endpoint of every service (None: AWS's own).
    """

    def __init__(self, session: Any, endpoint_url: str | None) -> None:
        from botocore.config import Config

        self._session = session
        self._endpoint_url = endpoint_url
        self._config = Config(connect_timeout=5, read_timeout=30,
                              retries={"mode": "standard", "max_attempts": 3})

    def client(self, service: str, config: Any = None) -> Any:
        """A new client of ``service`` (``"s3"``, ...) with this session's credentials and
        endpoint; ``config`` (a ``botocore.config.Config``) replaces the default timeouts and
        retries (connect 5 s, read 30 s, 3 attempts)."""
        return self._session.client(service, endpoint_url=self._endpoint_url,
                                    config=config or self._config)

    # Each client is made on first use: loading a service model costs CPU on every booting
    # node (EC2's is the largest, and is needed only when metadata tags are off).
    @functools.cached_property
    def ec2(self) -> Any:
        """EC2 client (DescribeTags)."""
        return self.client("ec2")

    @functools.cached_property
    def iam(self) -> Any:
        """IAM client (GetInstanceProfile, ListRoleTags)."""
        return self.client("iam")

    @functools.cached_property
    def s3(self) -> Any:
        """S3 client (GetObject)."""
        return self.client("s3")

    @classmethod
    def create(cls, imds_url: str, region: str, endpoint_url: str | None) -> AwsClients:
        """A session in ``region`` whose credentials come from the IMDS at ``imds_url``
        (sets the ``AWS_EC2_METADATA_*`` variables of this process's environment)."""
        os.environ.update({
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv4",
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_EC2_METADATA_V1_DISABLED": "true",
            "AWS_METADATA_SERVICE_TIMEOUT": "5",
            "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "5",
        })
        import boto3

        return cls(boto3.session.Session(region_name=region), endpoint_url)

    def credentials_method(self) -> str:
        """How boto3 found credentials (``"iam-role"`` for the instance role).

        Raises:
            NotYet: no credentials yet (the role may not be attached yet at boot).
        """
        try:
            creds = self._session.get_credentials()
        except Exception as exc:  # noqa: BLE001 - any failure here is retried until the deadline
            # botocore raises MetadataRetrievalError (and, in some versions, other errors)
            # when the metadata endpoint is slow to hand out a token at boot.
            raise NotYet(f"{type(exc).__name__}: {exc}") from None
        if creds is None:
            raise NotYet("no credentials from the instance role yet")
        return str(getattr(creds, "method", "unknown"))
