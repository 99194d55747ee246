"""Error taxonomy shared by every layer.

Only :mod:`condor_annex.cli.main` turns these into exit codes:

* :class:`BadInputError` -> exit status 2 (nothing was created in the cloud);
* any other :class:`AnnexError` -> exit status 1.
"""

from __future__ import annotations


class AnnexError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class BadInputError(AnnexError):
    """The user's input is invalid; raised before anything is created in the cloud.

    Args:
        message: one line naming the flag and the fix, e.g.
            ``"--count: must be a whole number from 1 to 10000 (got 'x')"``.
    """

    exit_code = 2


class LeaseWouldShortenError(BadInputError):
    """Adding instances to an annex with a lease length that would end it earlier than planned.

    Each command line formats its own message from the attributes (naming its own flag).

    Attributes:
        annex_name: the annex.
        current_end: the annex's lease end now (aware UTC datetime).
        requested_end: the end the given duration would set (aware UTC datetime).
    """

    def __init__(self, annex_name: str, current_end, requested_end) -> None:
        super().__init__(
            f"--duration: annex '{annex_name}' ends {current_end:%Y-%m-%d %H:%M:%S} UTC; "
            f"adding instances never ends it earlier (to shorten it: "
            f"condor_annex extend {annex_name} DURATION --force-lease)")
        self.annex_name = annex_name
        self.current_end = current_end
        self.requested_end = requested_end


class UnknownAnnexError(BadInputError):
    """A command names an annex that has nothing in the cloud (no instance, fleet, lease or
    bundle).  The message names the closest existing annexes and ``condor_annex status``."""


class NotSetUpError(BadInputError):
    """``setup`` has not been run (or its outputs are missing from the user's config)."""


class ProviderError(AnnexError):
    """A cloud call failed.

    Attributes:
        code: the provider's error code (e.g. ``"InsufficientInstanceCapacity"``).
        retryable: True when the same call may succeed later (throttling, 5xx).
        request_id: the provider's request id, when it sent one.
        ambiguous: True when the failed request may still have made something (a lost reply,
            a 5xx): a rollback must look for what it made before deciding it made nothing.
    """

    def __init__(self, message: str, *, code: str = "", retryable: bool = False,
                 request_id: str | None = None, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.request_id = request_id
        self.ambiguous = ambiguous


class CapacityError(ProviderError):
    """No capacity for the requested instance type or Spot pool; fail over, do not retry in place."""


class QuotaError(ProviderError):
    """An account limit (VcpuLimitExceeded, InstanceLimitExceeded) stops the request."""


class ThrottledError(ProviderError):
    """The provider asked us to slow down (RequestLimitExceeded, Throttling); retryable."""


class AuthError(ProviderError):
    """Credentials are missing, wrong, or lack a permission."""


class InvalidRequestError(ProviderError):
    """The provider rejected the request's parameters."""


class NotFoundError(ProviderError):
    """The resource does not exist (or is not visible yet: AWS is eventually consistent)."""


class PoolError(AnnexError):
    """The HTCondor side (collector, token minting, config rendering) failed."""
