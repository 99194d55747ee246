"""AWS's rules for EC2 Fleets and Spot Fleets that moto forgives (a gateway strict rule).

* **Fleets reach their ValidUntil.**  "ValidUntil: The end date and time of the request ... At
  this point, no new EC2 Fleet requests are placed or able to fulfill the request" and
  "TerminateInstancesWithExpiration: Indicates whether running instances should be terminated
  when the EC2 Fleet expires" (docs.aws.amazon.com/AWSEC2/latest/APIReference/
  API_CreateFleet.html); the same for Spot Fleet requests
  (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_SpotFleetRequestConfigData.html).
  ``instant`` fleets are one-shot and never expire.  moto stores both fields and never acts on
  them: the gateway records them from the CreateFleet / RequestSpotFleet requests it forwards
  and, at :meth:`FleetRules.tick`, ends every fleet whose ``ValidUntil`` has passed — the fleet
  stops fulfilling (EC2 Fleet: DeleteFleets, state ``deleted_running`` / ``deleted_terminating``;
  Spot Fleet: CancelSpotFleetRequests, ``cancelled_running`` / ``cancelled_terminating``) and its
  instances are terminated when ``TerminateInstancesWithExpiration`` is true.
* **ValidUntil cannot be moved.**  ModifyFleet and ModifySpotFleetRequest have no
  ``ValidUntil`` (botocore's EC2 model; API_ModifyFleet.html, API_ModifySpotFleetRequest.html):
  a request that sends one anyway is refused as EC2 refuses any parameter it does not know,
  ``UnknownParameter`` (docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html);
  moto silently ignores it.
* **The Spot Fleet role must exist.**  "If you use the AWS CLI or an API, you must ensure that
  these roles exist" (docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-fleet-prerequisites.html);
  EC2 answers ``InvalidSpotFleetRequestConfig`` "Parameter: SpotFleetRequestConfig.IamFleetRole
  is invalid".  moto accepts any ARN.
* **ExcessCapacityTerminationPolicy only on maintain fleets.**  "Supported only for fleets of
  type maintain" (API_CreateFleet.html); a CreateFleet of type ``request`` or ``instant`` that
  sends it is refused (``InvalidParameterCombination``, the code EC2 uses for parameters that do
  not go together in CreateFleet).  moto accepts it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_strict import Refusal, StrictRule

log = logging.getLogger(__name__)

#: Fleet types that live on (and so can expire); ``instant`` is one-shot.
_LASTING = ("request", "maintain")


@dataclass
class ExpiringFleet:
    """A fleet with a ``ValidUntil``, as the gateway recorded it from its creation request.

    Attributes:
        fleet_id: ``fleet-...`` (EC2 Fleet) or ``sfr-...`` (Spot Fleet request).
        api: ``ec2-fleet`` or ``spot-fleet``.
        region: its region.
        valid_until: epoch seconds.
        terminate: ``TerminateInstancesWithExpiration``.
        expired: set once the gateway ended it.
    """

    fleet_id: str
    api: str
    region: str
    valid_until: float
    terminate: bool
    expired: bool = False


def parse_time(text: str) -> float:
    """An EC2 timestamp parameter (ISO 8601, ``Z`` or an offset; naive means UTC) as epoch
    seconds.

    Raises:
        ValueError: not a timestamp.
    """
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _role_name(arn: str) -> str | None:
    """The role name of an IAM role ARN (``arn:aws:iam::123:role/path/name`` → ``name``)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "iam" or not parts[5].startswith("role/"):
        return None
    return parts[5].rsplit("/", 1)[-1] or None


class FleetRules(StrictRule):
    """The fleet rules of the module docstring.

    Attributes:
        fleets: the fleets with a ``ValidUntil`` seen created, by id.
    """

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self.fleets: dict[str, ExpiringFleet] = {}

    # checks ---------------------------------------------------------------------------------

    def before(self, call: Call) -> Refusal | None:
        if call.service != "ec2":
            return None
        if call.operation in ("ModifyFleet", "ModifySpotFleetRequest"):
            sent = next((k for k, _ in call.params if k.rsplit(".", 1)[-1] == "ValidUntil"), None)
            if sent:
                return ("UnknownParameter", f"The parameter {sent} is not recognized", 400)
        elif call.operation == "CreateFleet":
            kind = call.param("Type") or "maintain"
            if kind != "maintain" and call.param("ExcessCapacityTerminationPolicy"):
                return ("InvalidParameterCombination",
                        "ExcessCapacityTerminationPolicy is supported only for fleets of type "
                        f"maintain, not {kind}.", 400)
        elif call.operation == "RequestSpotFleet":
            return self._check_fleet_role(call)
        return None

    def _check_fleet_role(self, call: Call) -> Refusal | None:
        arn = call.param("SpotFleetRequestConfig.IamFleetRole") or ""
        name = _role_name(arn)
        if name is not None:
            iam = self.gateway.upstream_client("iam", call.region)
            try:
                iam.get_role(RoleName=name)
                return None
            except iam.exceptions.NoSuchEntityException:
                pass
        return ("InvalidSpotFleetRequestConfig",
                "Parameter: SpotFleetRequestConfig.IamFleetRole is invalid.", 400)

    # records --------------------------------------------------------------------------------

    def after(self, call: Call, reply: Reply) -> Reply:
        if call.service != "ec2" or reply[0] != 200 or \
                call.operation not in ("CreateFleet", "RequestSpotFleet"):
            return reply
        if call.operation == "CreateFleet":
            prefix, api, id_tag = "", "ec2-fleet", "fleetId"
            kind = call.param("Type") or "maintain"
        else:
            prefix, api, id_tag = "SpotFleetRequestConfig.", "spot-fleet", "spotFleetRequestId"
            kind = call.param(prefix + "Type") or "maintain"
        until = call.param(prefix + "ValidUntil")
        if kind not in _LASTING or not until:
            return reply
        import xml.etree.ElementTree as ET
        try:
            root = ET.fromstring(reply[2])
            fleet_id = next((e.text or "").strip() for e in root.iter()
                            if e.tag.rsplit("}", 1)[-1] == id_tag)
            valid_until = parse_time(until)
        except (ET.ParseError, StopIteration, ValueError):
            return reply   # moto refused it or the date is not one: nothing to enforce
        terminate = (call.param(prefix + "TerminateInstancesWithExpiration") or "").lower() \
            == "true"
        with self._lock:
            self.fleets.setdefault(fleet_id, ExpiringFleet(
                fleet_id, api, call.region or "us-east-1", valid_until, terminate))
        return reply

    def forget(self) -> None:
        with self._lock:
            self.fleets.clear()

    # time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> dict:
        """End every recorded fleet whose ``ValidUntil`` is at or before ``now`` (epoch s).

        Returns:
            ``{"expired": [fleet ids ended in this pass]}``, or ``{}``.  A fleet the call
            fails for (moto busy) is tried again at the next tick.
        """
        with self._lock:
            due = [f for f in self.fleets.values() if not f.expired and f.valid_until <= now]
        ended = []
        for fleet in due:
            try:
                self._expire(fleet)
            except Exception:  # noqa: BLE001 - botocore errors: try again next tick
                log.warning("ending expired fleet %s failed", fleet.fleet_id, exc_info=True)
                continue
            fleet.expired = True
            ended.append(fleet.fleet_id)
            log.info("fleet %s reached its ValidUntil: ended%s", fleet.fleet_id,
                     ", instances terminated" if fleet.terminate else "")
        return {"expired": ended} if ended else {}

    def _expire(self, fleet: ExpiringFleet) -> None:
        ec2 = self.gateway.upstream_client("ec2", fleet.region)
        if fleet.api == "ec2-fleet":
            found = ec2.describe_fleets(FleetIds=[fleet.fleet_id]).get("Fleets", [])
            if not found or found[0].get("FleetState", "").startswith("deleted"):
                return   # already ended (deleted by the user or the lease)
            end = ec2.delete_fleets
            params = {"FleetIds": [fleet.fleet_id]}
        else:
            found = ec2.describe_spot_fleet_requests(
                SpotFleetRequestIds=[fleet.fleet_id]).get("SpotFleetRequestConfigs", [])
            if not found or found[0].get("SpotFleetRequestState", "").startswith("cancelled"):
                return
            end = ec2.cancel_spot_fleet_requests
            params = {"SpotFleetRequestIds": [fleet.fleet_id]}
        try:
            end(**params, TerminateInstances=fleet.terminate)
        except ec2.exceptions.ClientError as e:
            # moto refuses TerminateInstances=True for a fleet without instances ("No instances
            # specified"); AWS accepts it, and there is nothing to terminate.
            if e.response["Error"]["Code"] != "InvalidParameterCombination" \
                    or not fleet.terminate:
                raise
            end(**params, TerminateInstances=False)
