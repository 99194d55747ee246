"""Service Quotas GetServiceQuota for EC2's vCPU quotas (a gateway strict rule).

API (for the local cloud and tests)::

    from condor_annex.providers.local.strict_quotas import ServiceQuotas
    quotas = gateway.rule(ServiceQuotas)     # None when the gateway is not strict
    quotas.set_quota("ec2", "L-1216C47A", 32)

AWS answers GetServiceQuota (``ServiceQuotasV20190624.GetServiceQuota``, JSON 1.1) with the
account's applied value of a quota: ``Quota`` with ``ServiceCode``, ``ServiceName``,
``QuotaArn`` (``arn:aws:servicequotas:REGION:ACCOUNT:ec2/L-1216C47A``), ``QuotaCode``,
``QuotaName``, ``Value``, ``Unit``, ``Adjustable``, ``GlobalQuota``
(docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_GetServiceQuota.html).  EC2's
On-Demand instance quotas are counted in vCPUs; "Running On-Demand Standard (A, C, D, H, I, M,
R, T, Z) instances" is ``L-1216C47A``
(docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html).  A quota the account
has no applied value for is answered ``NoSuchResourceException``.

moto knows only the VPC service's default quotas (``moto/servicequotas``): every EC2 quota is
NoSuchResourceException there.  This rule answers the EC2 quotas in :data:`DEFAULT_QUOTAS`
(the local account's, changeable with :meth:`ServiceQuotas.set_quota`); any other request goes
on to moto.
"""

from __future__ import annotations

import json
import threading

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_strict import StrictRule

#: (service code, quota code) -> (quota name, value).  The local account's vCPU quota is that
#: of an account past AWS's new-account limits (the local cloud's nodes are cheap).
DEFAULT_QUOTAS: dict[tuple[str, str], tuple[str, float]] = {
    ("ec2", "L-1216C47A"): ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
                            256.0),
    ("ec2", "L-34B43A08"): ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
                            256.0),
}
_JSON = [("Content-Type", "application/x-amz-json-1.1")]
#: The account moto answers for (its default).
ACCOUNT = "123456789012"


class ServiceQuotas(StrictRule):
    """The rule of the module docstring.  Thread-safe; :meth:`forget` (moto reset) restores
    :data:`DEFAULT_QUOTAS`."""

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self._quotas = dict(DEFAULT_QUOTAS)

    def set_quota(self, service_code: str, quota_code: str, value: float,
                  name: str = "") -> None:
        """Apply ``value`` (vCPUs for EC2's instance quotas) to a quota of the local account."""
        with self._lock:
            old = self._quotas.get((service_code, quota_code), (name or quota_code, 0.0))
            self._quotas[(service_code, quota_code)] = (name or old[0], float(value))

    def forget(self) -> None:
        with self._lock:
            self._quotas = dict(DEFAULT_QUOTAS)

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Answer GetServiceQuota of a quota in the table; None (forward to moto) otherwise."""
        if call.service != "servicequotas" or call.operation != "GetServiceQuota":
            return None
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return None
        key = (req.get("ServiceCode", ""), req.get("QuotaCode", ""))
        with self._lock:
            found = self._quotas.get(key)
        if found is None:
            return None
        region = call.region or "us-east-1"
        name, value = found
        quota = {"ServiceCode": key[0], "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                 "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT}:{key[0]}/{key[1]}",
                 "QuotaCode": key[1], "QuotaName": name, "Value": value, "Unit": "None",
                 "Adjustable": True, "GlobalQuota": False}
        return 200, list(_JSON), json.dumps({"Quota": quota}).encode()
