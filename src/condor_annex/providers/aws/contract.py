"""Proof for the type checker that :class:`AwsProvider` keeps the provider contract.

``make test`` runs mypy over ``src/`` (tests/unit/test_types.py): if AwsProvider loses a method
of :class:`~condor_annex.providers.base.Provider`, or one's signature drifts from the contract,
the assignment below stops type-checking and the test fails.  Nothing here runs at import time
beyond the assignment.
"""

from __future__ import annotations

from condor_annex.providers.aws.provider import AwsProvider
from condor_annex.providers.base import Provider


def as_provider(provider: AwsProvider) -> Provider:
    """``provider`` seen through the contract (mypy checks that it satisfies it)."""
    return provider
