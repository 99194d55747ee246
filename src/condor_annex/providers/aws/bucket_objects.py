"""Objects condor-annex keeps in setup's bucket by content: put only when the bytes differ.

The agent zipapp and the seed's wheels are deterministic builds; uploading them again when the
bucket already holds the same bytes would only cost time.  S3 HeadObject tells the size and our
user metadata ``sha256`` (the object's SHA-256, hex; S3 user metadata: ``x-amz-meta-*``,
docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html).
"""

from __future__ import annotations

import hashlib
from typing import Any

from condor_annex.errors import NotFoundError
from condor_annex.providers.aws.errors import aws_errors

#: S3 user metadata holding an object's SHA-256 (hex).
SHA_META = "sha256"


def put_unless_same(s3: Any, bucket: str, key: str, data: bytes, content_type: str) -> bool:
    """Put ``data`` at ``key`` unless the bucket holds the same bytes (HeadObject, PutObject).

    Returns:
        True when it uploaded, False when the bucket already had them.

    Raises:
        ProviderError: an S3 call failed (other than the object being absent).
    """
    digest = hashlib.sha256(data).hexdigest()
    try:
        with aws_errors("s3.HeadObject"):
            head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("ContentLength") == len(data) and \
                head.get("Metadata", {}).get(SHA_META) == digest:
            return False
    except NotFoundError:
        pass
    with aws_errors("s3.PutObject"):
        s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={SHA_META: digest},
                      ContentType=content_type)
    return True
