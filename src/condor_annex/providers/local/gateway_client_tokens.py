"""Client-token idempotency of EC2 launches, as the AWS gateway plays it (moto ignores tokens).

"Ensuring idempotency in Amazon EC2 API requests"
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html): a RunInstances,
CreateFleet or RequestSpotFleet repeated with the same client token returns the first request's
result instead of launching again, and the same token with other parameters is refused with
``IdempotentParameterMismatch``.  The gateway keeps the first successful reply per (operation,
token) and replays it.  Stdlib only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply, error_reply

__all__ = ["TOKEN_PARAM", "ClientTokens"]

#: Query parameter holding each launch call's client token.
TOKEN_PARAM = {"RunInstances": "ClientToken", "CreateFleet": "ClientToken",
               "RequestSpotFleet": "SpotFleetRequestConfig.ClientToken"}


class ClientTokens:
    """The first successful reply to each EC2 launch, by client token.  Thread-safe: requests
    with one token are handled one at a time (a retry racing the first attempt waits for it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: dict[tuple[str, str], tuple[tuple, Reply]] = {}
        self.token_locks: dict[tuple[str, str], threading.Lock] = {}

    def forget(self) -> None:
        """Forget every reply (moto was reset)."""
        with self.lock:
            self.replies.clear()

    def _token_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.lock:
            return self.token_locks.setdefault(key, threading.Lock())

    @staticmethod
    def token_of(call: Call) -> str | None:
        """The client token of an EC2 launch request, or None (not a launch, or no token)."""
        if call.service != "ec2":
            return None
        return call.param(TOKEN_PARAM.get(call.operation, "")) or None

    def send(self, call: Call, token: str,
             forward: Callable[[], tuple[Reply, str]]) -> tuple[Reply, str]:
        """Answer a launch carrying client token ``token`` as EC2 does.

        Args:
            call: the launch request.
            token: its client token (:meth:`token_of`).
            forward: sends the request on (to the strict layers and moto) and returns
                ``(reply, outcome)``.

        Returns:
            ``(reply, outcome)``: the first reply again (outcome ``replayed``), an
            ``IdempotentParameterMismatch`` refusal (``fail``), or what ``forward`` returned
            (its reply kept when it succeeded).
        """
        key = (call.operation, token)
        signature = tuple(sorted(call.params))
        with self._token_lock(key):
            seen = self.replies.get(key)
            if seen is not None:
                if seen[0] == signature:
                    return seen[1], "replayed"
                return error_reply(
                    call, "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with "
                    "arguments used in previous request(s).", 400), "fail"
            reply, outcome = forward()
            if reply[0] == 200:
                with self.lock:
                    self.replies[key] = (signature, reply)
            return reply, outcome
