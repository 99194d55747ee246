"""botocore errors -> the condor_annex error taxonomy, in one place.

This is the only module that imports ``botocore.exceptions``.  Wrap every AWS call::

    with aws_errors("ec2.RunInstances"):
        ec2.run_instances(...)

or decorate a function with ``@aws_errors("s3.PutObject")``.  The raised error's message names the
operation and the AWS error code, e.g. ``"ec2.RunInstances: InsufficientInstanceCapacity: ..."``;
its ``code`` attribute holds the code, so callers can branch on it without botocore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from condor_annex.errors import (AuthError, CapacityError, InvalidRequestError, NotFoundError,
                                 ProviderError, QuotaError, ThrottledError)

#: Codes meaning "no capacity for this type/pool now": fail over, do not retry in place.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientCapacityOnHost",
    "SpotMaxPriceTooLow", "MaxSpotFleetRequestCountExceeded", "Unsupported",
})
#: Codes meaning an account limit stops the request.
QUOTA_CODES = frozenset({
    "VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
    "LimitExceeded", "LimitExceededException", "ServiceQuotaExceededException",
})
#: Codes meaning "slow down"; the same call may succeed later.
THROTTLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
    "SlowDown", "RequestThrottled", "RequestThrottledException", "EC2ThrottledException",
})
#: Codes meaning the caller's credentials are missing, wrong, expired or not allowed.
AUTH_CODES = frozenset({
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken",
    "ExpiredTokenException", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "InvalidAccessKeyId", "OptInRequired", "403",
})
#: Codes meaning the resource does not exist (or is not visible yet).
NOT_FOUND_CODES = frozenset({
    "NoSuchKey", "NoSuchBucket", "ResourceNotFoundException", "NoSuchEntity", "404",
})
#: Codes meaning a server-side fault; the same call may succeed later.
SERVER_CODES = frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "InternalServiceError",
    "InternalServiceException", "ServiceUnavailable", "ServiceUnavailableException",
    "Unavailable", "ServerInternal",
})


def classify(code: str, http_status: int | None = None) -> tuple[type[ProviderError], bool]:
    """Map an AWS error code (and HTTP status) to (error class, retryable).

    Args:
        code: the ``Error.Code`` of the AWS response, e.g. ``"InvalidInstanceID.NotFound"``.
        http_status: the HTTP status code, if known.

    Returns:
        The :mod:`condor_annex.errors` class to raise and whether the call may be retried.
    """
    if code in CAPACITY_CODES:
        return CapacityError, False
    if code in QUOTA_CODES:
        return QuotaError, False
    if code in THROTTLE_CODES:
        return ThrottledError, True
    if code in AUTH_CODES or code.startswith("AccessDenied"):
        return AuthError, False
    if code in NOT_FOUND_CODES or "NotFound" in code:
        return NotFoundError, False
    if code in SERVER_CODES or (http_status is not None and http_status >= 500):
        return ProviderError, True
    return InvalidRequestError, False


def translate(operation: str, exc: BaseException) -> ProviderError | None:
    """Turn a botocore exception into our taxonomy.

    Args:
        operation: ``"<service>.<Operation>"``, named in the message.
        exc: the exception botocore raised.

    Returns:
        The error to raise instead, or ``None`` when ``exc`` is not a botocore error.
    """
    from botocore import exceptions as bex
    from botocore.parsers import ResponseParserError

    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code") or meta.get("HTTPStatusCode") or "Unknown")
        status = meta.get("HTTPStatusCode")
        cls, retryable = classify(code, status)
        message = err.get("Message") or str(exc)
        return cls(f"{operation}: {code}: {message}", code=code, retryable=retryable,
                   request_id=meta.get("RequestId"))
    if isinstance(exc, ResponseParserError):
        if "html" in str(exc).lower():
            # An emulator (moto) answers an unimplemented call with HTTP 500 and an HTML page.
            return ProviderError(
                f"{operation}: NotImplemented: the endpoint does not implement the operation "
                "(it answered HTTP 500 with an HTML page, not an AWS error)",
                code="NotImplemented", retryable=False)
        return ProviderError(f"{operation}: unreadable response: {exc}", code="ResponseParse",
                             retryable=True)
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError,
                        bex.CredentialRetrievalError, bex.NoAuthTokenError)):
        return AuthError(f"{operation}: no usable AWS credentials ({type(exc).__name__}); "
                         "configure key files or an instance role", code=type(exc).__name__)
    if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectTimeoutError,
                        bex.ReadTimeoutError, bex.ConnectionClosedError)):
        return ProviderError(f"{operation}: cannot reach the endpoint: {exc}",
                             code=type(exc).__name__, retryable=True)
    if isinstance(exc, bex.ParamValidationError):
        return InvalidRequestError(f"{operation}: invalid parameters: {exc}",
                                   code="ParamValidation")
    if isinstance(exc, bex.WaiterError):
        return ProviderError(f"{operation}: {exc}", code="WaiterError")
    if isinstance(exc, bex.BotoCoreError):
        return ProviderError(f"{operation}: {type(exc).__name__}: {exc}",
                             code=type(exc).__name__)
    return None


@contextlib.contextmanager
def aws_errors(operation: str) -> Iterator[None]:
    """Context manager (also usable as a decorator) that re-raises botocore errors as
    :class:`~condor_annex.errors.ProviderError` subclasses; other exceptions pass through.

    Args:
        operation: ``"<service>.<Operation>"``, e.g. ``"ec2.RunInstances"``.

    Raises:
        CapacityError: InsufficientInstanceCapacity, SpotMaxPriceTooLow, ...
        QuotaError: VcpuLimitExceeded, InstanceLimitExceeded, MaxSpotInstanceCountExceeded.
        ThrottledError: RequestLimitExceeded, Throttling, ... (``retryable`` is True).
        AuthError: AuthFailure, UnauthorizedOperation, AccessDenied*, no credentials.
        NotFoundError: ``*NotFound*``, NoSuchKey, NoSuchBucket, ResourceNotFoundException.
        ProviderError: 5xx and endpoint errors (retryable), an emulator's "not implemented".
        InvalidRequestError: any other rejected request, and parameter validation errors.
    """
    try:
        yield
    except Exception as exc:
        mapped = translate(operation, exc)
        if mapped is None:
            raise
        raise mapped from exc
