"""The base of the gateway's *strict* layers: AWS rules that moto forgives (the ``strict_*``
modules), and what such a layer may use of its gateway.

This module sits below both the gateway (which builds its layers) and the layers (which
subclass :class:`StrictRule`), so neither imports the other's module at the type level:
:class:`GatewayView` is the gateway as a layer sees it.  Stdlib only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply

__all__ = ["GatewayView", "Refusal", "StrictRule"]

#: An AWS rule's refusal of a request: (error code, message, HTTP status).
Refusal = tuple[str, str, int]

R = TypeVar("R", bound="StrictRule")


class GatewayView(Protocol):
    """What a strict layer may use of the gateway that holds it (:class:`.gateway.Gateway`).

    Attributes:
        clock: the gateway's clock, seconds (delays, the listing lag, profile ages).
        wall: the wall clock, epoch seconds (dates such as a fleet's ``ValidUntil``).
        profile_age_s: seconds during which launches refuse a new instance profile.
    """

    clock: Callable[[], float]
    wall: Callable[[], float]
    profile_age_s: float

    def upstream_client(self, service: str, region: str = "") -> Any:
        """A boto3 client straight to moto (not through the gateway, not counted)."""

    def role_of_key(self, access_key: str) -> str | None:
        """The IAM role an instance access key belongs to, or None."""

    def rule(self, kind: type[R]) -> R | None:
        """The layer of class ``kind`` in force, or None."""


class StrictRule:
    """One AWS rule that moto forgives, kept by the gateway (the ``strict_*`` modules).

    A rule sees every request the gateway forwards, once it passed the fault rules; its hooks run
    in the gateway's request threads (or in :meth:`Gateway.tick`) and must be thread-safe.  Rules
    reach moto through :meth:`Gateway.upstream_client` (boto3, straight to moto: what AWS itself
    does behind the API is not a client request, so it is neither counted nor subject to faults).

    Args:
        gateway: the gateway the rule belongs to.
    """

    def __init__(self, gateway: GatewayView) -> None:
        self.gateway = gateway

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Answer a request in moto's place (what moto lacks altogether).

        Args:
            call: the request.
            body: its body (de-chunked).

        Returns:
            The reply, or None to let the request go on (to :meth:`before` and moto).
        """
        return None

    def before(self, call: Call) -> Refusal | None:
        """Check a request before it reaches moto.

        Returns:
            None to let it through, or the AWS error refusing it (moto never sees it).
        """
        return None

    def after(self, call: Call, reply: Reply) -> Reply:
        """Learn from moto's reply to a forwarded request, or amend it.

        Returns:
            The reply to send (``reply`` itself when unchanged).
        """
        return reply

    def tick(self, now: float) -> dict:
        """Do what AWS does by itself as time passes (called by :meth:`Gateway.tick`).

        Args:
            now: the wall-clock time, epoch seconds.

        Returns:
            What was done, JSON-ready (empty when nothing).
        """
        return {}

    def forget(self) -> None:
        """Forget everything (moto was reset)."""
