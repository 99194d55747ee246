"""The lease function's AWS clients when the local cloud runs it (in-process, for Lambda).

The lease handler (:mod:`condor_annex.lease.handler`) is given boto3 clients of the local
cloud's endpoint; its EC2 client is wrapped by :class:`MotoFleetEc2` for one moto gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def handler_clients(client: Callable[[str], Any]) -> dict[str, Any]:
    """The lease handler's clients (``ec2``, ``s3``, ``scheduler``, ``iam``), made by
    ``client(service)``, its EC2 client wrapped by :class:`MotoFleetEc2`.  Called in the Lambda
    worker threads: boto3 clients are made per call, each thread's from its own session."""
    clients = {s: client(s) for s in ("ec2", "s3", "scheduler", "iam")}
    clients["ec2"] = MotoFleetEc2(clients["ec2"])
    return clients


class MotoFleetEc2:
    """An EC2 client for the lease handler that works around one moto gap.

    moto 5.2 answers CancelSpotFleetRequests / DeleteFleets with ``TerminateInstances=True``
    with ``InvalidParameterCombination: No instances specified`` when the fleet has no
    instance left (it terminates an empty list); the lease handler terminates an annex's
    instances before it ends its fleets, so every spot lease would fail.  AWS accepts the call;
    here it is repeated without ``TerminateInstances`` (nothing is left to terminate).
    """

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def _ending(self, call, **params):
        try:
            return call(**params)
        except Exception as e:  # noqa: BLE001 - botocore's ClientError, matched by code
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code != "InvalidParameterCombination" or not params.get("TerminateInstances"):
                raise
            return call(**{**params, "TerminateInstances": False})

    def cancel_spot_fleet_requests(self, **params):
        """CancelSpotFleetRequests; see the class docstring."""
        return self._ending(self._client.cancel_spot_fleet_requests, **params)

    def delete_fleets(self, **params):
        """DeleteFleets; see the class docstring."""
        return self._ending(self._client.delete_fleets, **params)
