"""Synchronous Lambda Invoke of the lease function's collector probe (a gateway strict rule).

Lambda's Invoke with the default ``RequestResponse`` invocation type runs the function and
answers 200 with the function's return value as the payload (JSON), and the header
``X-Amz-Function-Error: Unhandled`` when the function raised
(docs.aws.amazon.com/lambda/latest/api/API_Invoke.html).  moto runs functions only in Docker,
which the local cloud does not have; its asynchronous invocations are run by
:mod:`.lambda_async`.  This rule answers a synchronous Invoke whose event is a collector probe
(``{"Probe": {...}}``, sent by ``check-setup --preflight``) by running the lease handler's own
:func:`condor_annex.lease.handler.probe` in the gateway's process: on the local cloud "inside
AWS" is the host the cloud runs on.  Every other Invoke goes on to moto.
"""

from __future__ import annotations

import json

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_strict import StrictRule


class CollectorProbe(StrictRule):
    """The rule of the module docstring."""

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Run a probe event; None (forward) for any other request."""
        if call.service != "lambda" or call.operation != "Invoke":
            return None
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("Probe"), dict):
            return None
        from condor_annex.lease.handler import probe
        out = probe(event["Probe"])
        return 200, [("Content-Type", "application/json"),
                     ("X-Amz-Executed-Version", "$LATEST")], json.dumps(out).encode()
