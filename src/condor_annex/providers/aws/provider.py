"""The AWS provider: EC2 for instances, S3 for config bundles, EventBridge Scheduler for leases.

See providers/base.py for the contract.  AWS specifics:

* Membership is the tag ``htcondor:AnnexName``, matched exactly (the EC2 ``tag:`` filter, then
  checked again here, since EC2 filter values treat ``*`` and ``?`` as wildcards).
* A launch is one RunInstances request with ``MinCount = MaxCount = count`` (all or nothing),
  tagged with its client token; capacity errors surface at once for the caller to fail over,
  while throttling, 5xx and lost replies are retried with the same token
  (:mod:`condor_annex.providers.aws.launch_retry`).
* A lease is one one-time Scheduler schedule per annex (``at(...)`` in UTC), whose target is the
  lease enforcer Lambda with the event described in :mod:`condor_annex.lease.handler`.  The
  schedule time is rounded up to a whole second and equals the event's ``LeaseExpiration``, so
  the enforcer is never invoked before the lease it checks has expired.
* Ownership is the tag ``htcondor:AnnexOwner`` = the caller's identity (STS GetCallerIdentity,
  asked once per provider: :meth:`AwsProvider.owner`) on everything a create makes: instances
  and volumes, fleets, launch templates, the annex's role and instance profile, and the bundle
  object (S3 object tagging).  A Scheduler schedule takes no tags (CreateSchedule has no
  ``Tags``; only schedule groups are taggable), so a lease carries its owner in its event
  (``AnnexOwner``).  :mod:`condor_annex.providers.aws.orphans` lists by it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from condor_annex.config import AwsSettings
from condor_annex.errors import InvalidRequestError, NotFoundError, NotSetUpError
from condor_annex.model import (TAG_ANNEX_NAME, TAG_ANNEX_OFF, TAG_ANNEX_OWNER,
                                TAG_LAUNCH_TOKEN, TAG_LEASE_END, BundleRef, CloudInstance,
                                FleetRequest, FleetResult, FleetsEnded, LaunchRequest,
                                LaunchResult, LeaseRef, LeaseTagged, SetupOutputs, bundle_key,
                                lease_end_value, lease_schedule_name)
from condor_annex.providers.aws import setup as _setup
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.identity import caller_owner
from condor_annex.providers.aws.instance_settings import instance_settings
from condor_annex.providers.aws.launch_retry import launch_with_retries
from condor_annex.providers.aws.pricing import Price, PriceSource
from condor_annex.providers.aws.session import make_client

if TYPE_CHECKING:
    from condor_annex.providers.aws.orphans import AnnexResource

#: A launch request of either kind (its ``owner`` is filled in by :meth:`AwsProvider._owned`).
_Request = TypeVar("_Request", LaunchRequest, FleetRequest)

#: EC2 states that count as present (may cost money or run work).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
#: TerminateInstances accepts at most this many ids per call.
TERMINATE_BATCH = 1000
#: Scheduler group of lease schedules.
SCHEDULE_GROUP = "default"
#: Scheduler retry policy for invoking the enforcer: 185 attempts (the maximum) within 24 h.
LEASE_RETRY_POLICY = {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}


class AwsProvider:
    """Annexes on AWS.  See providers/base.py.

    Args:
        settings: region, endpoint (the local cloud's emulator, or None for AWS) and key files.
        outputs: what ``setup`` made; needed for bundles and leases, not for instances.
        page_size: DescribeInstances ``MaxResults`` per page (5-1000).
    """

    name = "aws"

    def __init__(self, settings: AwsSettings, outputs: SetupOutputs | None = None, *,
                 page_size: int = 1000) -> None:
        self.settings = settings
        self.outputs = outputs
        self.page_size = page_size
        self._owner = ""

    def owner(self) -> str:
        """The user's identity, the value of tag ``htcondor:AnnexOwner`` (see
        :func:`condor_annex.providers.aws.identity.caller_owner`): STS GetCallerIdentity on
        first use, then remembered by this provider (one call per command).

        Raises:
            ProviderError: the call failed.
        """
        if not self._owner:
            self._owner = caller_owner(self.settings)
        return self._owner

    def _owned(self, request: _Request) -> _Request:
        """``request`` with its ``owner`` filled in (the caller's identity) when empty."""
        return request if request.owner else dataclasses.replace(request, owner=self.owner())

    # --- setup ----------------------------------------------------------------------------

    def setup(self, *, progress: Callable[[str], None] | None = None) -> SetupOutputs:
        """Create or find the setup stack (see :func:`providers.aws.setup.setup`).

        Args:
            progress: called with the stack status at each poll (about once a second).
        """
        self.outputs = _setup.setup(self.settings, progress=progress)
        return self.outputs

    def check_setup(self, outputs: SetupOutputs) -> list[tuple[str, bool, str]]:
        """Inspect each setup resource (see :func:`providers.aws.setup.check_setup`)."""
        return _setup.check_setup(self.settings, outputs)

    def teardown(self, outputs: SetupOutputs, *, force: bool = False) -> None:
        """Undo setup (see :func:`providers.aws.setup.teardown`)."""
        _setup.teardown(self.settings, outputs, force=force)

    def _need_outputs(self, what: str) -> SetupOutputs:
        if self.outputs is None:
            raise NotSetUpError(f"{what}: setup outputs are missing; run 'condor_annex setup'")
        return self.outputs

    # --- instances ------------------------------------------------------------------------

    def launch(self, request: LaunchRequest, *,
               notify: Callable[[str], None] | None = None) -> LaunchResult:
        """Launch ``request.count`` instances with one EC2 RunInstances request.

        ``MinCount = MaxCount = count`` (all or nothing); ``ClientToken`` makes a resend return
        the same instances on AWS.  Throttling, 5xx, a lost reply and the instance-profile
        propagation race are retried with the same token (see
        :mod:`condor_annex.providers.aws.launch_retry`); before a resend, instances tagged with
        the request's token are looked up, and found ones are the answer.  Instances (and their
        volumes) are tagged ``htcondor:AnnexName``, ``htcondor:LaunchToken``,
        ``htcondor:LeaseEnd`` (``request.lease_end``), ``htcondor:AnnexOwner`` (the caller's
        identity, unless ``request.owner`` names one) and ``request.tags``; IMDSv2 is required
        with a PUT hop limit of 1 and instance tags are visible in the metadata; an instance
        that shuts itself down is terminated.  With ``request.subnet_ids``, the first is the
        ``SubnetId``.

        Args:
            request: the launch.
            notify: called with one line per retry (a progress line).

        Returns:
            The token and the instance ids.

        Raises:
            CapacityError: no capacity for the type (fail over; not retried here).
            QuotaError: an account limit.
            InvalidRequestError: a parameter was rejected.
            ProviderError: any other failure, or retries ran out (``ambiguous`` when an
                attempt may have launched instances).
        """
        request = self._owned(request)
        params: dict[str, Any] = {
            "MinCount": request.count,
            "MaxCount": request.count,
            "ClientToken": request.client_token,
            "InstanceType": request.instance_type,
            **instance_settings(request),
        }
        if request.user_data is not None:
            params["UserData"] = request.user_data
        if request.subnet_ids:
            params["SubnetId"] = request.subnet_ids[0]
        ec2 = make_client(self.settings, "ec2", fast_fail=True)

        def send() -> LaunchResult:
            with aws_errors("ec2.RunInstances"):
                reply = ec2.run_instances(**params)
            return LaunchResult(client_token=request.client_token,
                                instance_ids=tuple(i["InstanceId"] for i in reply["Instances"]))

        def find() -> LaunchResult | None:
            ids = tuple(iid for iid, i in self.query_instances(
                request.annex_name, launch_token=request.client_token).items() if i.alive)
            return LaunchResult(request.client_token, ids) if ids else None

        return launch_with_retries(send, find, what="ec2.RunInstances", notify=notify)

    def launch_fleet(self, request: FleetRequest, *,
                     notify: Callable[[str], None] | None = None) -> FleetResult:
        """Launch Spot capacity for an annex: a Spot Fleet request (RequestSpotFleet) or an EC2
        Fleet (CreateFleet with the launch template ``annex-<name>``), as ``request.spot.api``
        says, retried as :meth:`launch` is (a fleet tagged with the request's token is the
        answer to a lost reply).  See :mod:`condor_annex.providers.aws.fleet` for the request
        shape.  Everything it makes is tagged ``htcondor:AnnexOwner`` as :meth:`launch` does.

        Returns:
            The token, the fleet id and the instance ids known at once (instant fleets).

        Raises:
            CapacityError: an instant fleet got no Spot capacity (not retried here).
            InvalidRequestError: a parameter was rejected.
            ProviderError: any other failure.
        """
        from condor_annex.providers.aws import fleet
        return fleet.launch_fleet(self.settings, self._owned(request), notify=notify)

    def end_fleets(self, annex_name: str, *, launch_token: str = "") -> FleetsEnded:
        """Cancel the annex's Spot Fleet requests and delete its EC2 Fleets, terminating their
        instances, and delete its launch template (see :func:`providers.aws.fleet.end_fleets`).
        With ``launch_token``, only what that launch request made (its tag).

        Raises:
            ProviderError: a call failed.
        """
        from condor_annex.providers.aws import fleet
        return fleet.end_fleets(self.settings, annex_name, launch_token=launch_token)

    def query_instances(self, annex_name: str | None = None, *,
                        include_terminated: bool = False,
                        launch_token: str = "") -> dict[str, CloudInstance]:
        """Instances of annex ``annex_name`` (exact tag match), or of every annex when None.

        Follows EC2 DescribeInstances, paginated (``MaxResults`` = ``page_size``).

        Args:
            annex_name: the annex, or None for every instance tagged ``htcondor:AnnexName``.
            include_terminated: also return shutting-down and terminated instances.
            launch_token: only instances of that launch request (tag ``htcondor:LaunchToken``).

        Returns:
            instance id -> :class:`CloudInstance`.

        Raises:
            ProviderError: the call failed.
        """
        filters = ([{"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [annex_name]}] if annex_name
                   else [{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}])
        if launch_token:
            filters.append({"Name": f"tag:{TAG_LAUNCH_TOKEN}", "Values": [launch_token]})
        if not include_terminated:
            filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
        ec2 = make_client(self.settings, "ec2")
        found: dict[str, CloudInstance] = {}
        with aws_errors("ec2.DescribeInstances"):
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": self.page_size})
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        cloud = _cloud_instance(inst)
                        if (annex_name is None or cloud.annex_name == annex_name) and \
                                (not launch_token or cloud.launch_token == launch_token):
                            found[cloud.instance_id] = cloud
        return found

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances with EC2 TerminateInstances, at most 1000 ids per call.

        Ids that no longer exist are skipped: on ``InvalidInstanceID.NotFound`` the batch is
        retried with only the ids DescribeInstances still knows.

        Raises:
            ProviderError: the call failed for another reason.
        """
        ids = list(dict.fromkeys(instance_ids))
        ec2 = make_client(self.settings, "ec2")
        for start in range(0, len(ids), TERMINATE_BATCH):
            batch = ids[start:start + TERMINATE_BATCH]
            try:
                with aws_errors("ec2.TerminateInstances"):
                    ec2.terminate_instances(InstanceIds=batch)
            except NotFoundError:
                known = self._existing(ec2, batch)
                if known:
                    with aws_errors("ec2.TerminateInstances"):
                        ec2.terminate_instances(InstanceIds=known)

    def request_stop(self, instance_ids: Sequence[str], when: datetime) -> None:
        """Ask instances to leave the pool gracefully: EC2 CreateTags ``htcondor:AnnexOff`` =
        ``when`` (ISO 8601), at most 1000 ids per call.  Their agent sees the tag through
        instance metadata tags, shuts HTCondor down gracefully and powers off.

        Raises:
            ProviderError: the call failed (an instance gone meanwhile is ``NotFoundError``).
        """
        ids = list(dict.fromkeys(instance_ids))
        ec2 = make_client(self.settings, "ec2")
        tags = [{"Key": TAG_ANNEX_OFF, "Value": when.isoformat(timespec="seconds")}]
        for start in range(0, len(ids), TERMINATE_BATCH):
            with aws_errors("ec2.CreateTags"):
                ec2.create_tags(Resources=ids[start:start + TERMINATE_BATCH], Tags=tags)

    def tag_instances(self, instance_ids: Sequence[str], tags: dict[str, str]) -> None:
        """EC2 CreateTags (:func:`condor_annex.providers.aws.instance_tags.tag_instances`).
        See providers/base.py."""
        from condor_annex.providers.aws import instance_tags
        instance_tags.tag_instances(make_client(self.settings, "ec2"), instance_ids, tags,
                                    self._existing)

    def console_output(self, instance_id: str) -> tuple[str, datetime | None, bool]:
        """EC2 GetConsoleOutput with ``Latest=True``, again without it when EC2 refuses
        (:func:`condor_annex.providers.aws.console.console_output`).  See providers/base.py.
        """
        from condor_annex.providers.aws import console
        return console.console_output(self.settings, instance_id)

    def agent_log(self, annex_name: str, instance_id: str) -> bytes | None:
        """S3 GetObject ``logs/<annex>/<instance-id>/agent.log`` in the config bucket
        (:func:`condor_annex.providers.aws.agent_log.read_agent_log`).  See providers/base.py.
        """
        from condor_annex.providers.aws import agent_log
        return agent_log.read_agent_log(self.settings, self._need_outputs("agent log").bucket,
                                        annex_name, instance_id)

    def on_demand_price(self, instance_type: str) -> Price:
        """Price List GetProducts (:mod:`condor_annex.providers.aws.pricing`).  See
        providers/base.py."""
        return PriceSource(self.settings).on_demand_usd_per_hour(self.settings.region,
                                                                 instance_type)

    def spot_price(self, instance_type: str, az: str | None = None) -> Price:
        """EC2 DescribeSpotPriceHistory (:mod:`condor_annex.providers.aws.pricing`).  See
        providers/base.py."""
        return PriceSource(self.settings).spot_usd_per_hour(self.settings.region, instance_type,
                                                            az)

    def volume_price(self) -> Price:
        """gp3 storage from the Price List (:mod:`condor_annex.providers.aws.pricing`).  See
        providers/base.py."""
        return PriceSource(self.settings).ebs_gp3_usd_per_gb_month(self.settings.region)

    def public_ip_price(self) -> Price:
        """See providers/base.py and :mod:`condor_annex.providers.aws.pricing`."""
        return PriceSource(self.settings).public_ipv4_usd_per_hour(self.settings.region)

    def set_lease_end(self, annex_name: str, lease_end: datetime) -> LeaseTagged:
        """Rewrite tag ``htcondor:LeaseEnd`` (:func:`lease_end_value`) on every live instance
        of the annex, its active fleets (Spot Fleet requests, EC2 Fleets) and its launch
        template: EC2 CreateTags, at most 1000 resource ids per call (CreateTags replaces a
        tag's value).  Idempotent.  Instances gone meanwhile are skipped (the batch is retried
        with those DescribeInstances still knows).

        Returns:
            What was tagged, with each fleet's ``ValidUntil`` (which cannot be moved).

        Raises:
            ProviderError: a call failed.
        """
        from condor_annex.providers.aws import fleet
        ec2 = make_client(self.settings, "ec2")
        instances = sorted(iid for iid, i in self.query_instances(annex_name).items()
                           if i.alive)
        fleets = fleet.live_fleets(ec2, annex_name)
        templates = fleet.annex_launch_templates(ec2, annex_name)
        from condor_annex.providers.aws import instance_tags
        instance_tags.tag_instances(ec2, instances + [f for f, _ in fleets] + templates,
                                    {TAG_LEASE_END: lease_end_value(lease_end)}, self._existing)
        return LeaseTagged(tuple(instances), tuple(fleets), tuple(templates))

    def missing_subnets(self, subnet_ids: Sequence[str]) -> list[str]:
        """Those of ``subnet_ids`` that do not exist in the region (EC2 DescribeSubnets with a
        ``subnet-id`` filter, which, unlike ``SubnetIds``, does not fail on unknown ids).

        Raises:
            ProviderError: the call failed.
        """
        if not subnet_ids:
            return []
        ec2 = make_client(self.settings, "ec2")
        with aws_errors("ec2.DescribeSubnets"):
            found = {s["SubnetId"] for page in ec2.get_paginator("describe_subnets").paginate(
                Filters=[{"Name": "subnet-id", "Values": list(subnet_ids)}])
                for s in page.get("Subnets", [])}
        return [s for s in subnet_ids if s not in found]

    @staticmethod
    def _existing(ec2: Any, ids: list[str]) -> list[str]:
        # The instance-id *filter* (unlike InstanceIds) does not fail on unknown ids.
        with aws_errors("ec2.DescribeInstances"):
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-id", "Values": ids}])
            return [i["InstanceId"] for page in pages for r in page.get("Reservations", [])
                    for i in r.get("Instances", [])]

    # --- bundles --------------------------------------------------------------------------

    def put_bundle(self, annex_name: str, bundle: bytes) -> BundleRef:
        """Upload the annex's config bundle with S3 PutObject (SSE-S3, AES256), replacing any,
        with object tags ``htcondor:AnnexName`` and ``htcondor:AnnexOwner`` (PutObject
        ``Tagging``, which needs ``s3:PutObjectTagging`` too).

        Args:
            annex_name: the annex; the key is ``config-<annex>.tar.gz``.
            bundle: the tar.gz bytes.

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: the upload failed.
        """
        ref = BundleRef(self._need_outputs("put_bundle").bucket, bundle_key(annex_name))
        with aws_errors("s3.PutObject"):
            make_client(self.settings, "s3").put_object(
                Bucket=ref.bucket, Key=ref.key, Body=bundle, ServerSideEncryption="AES256",
                ContentType="application/gzip", Tagging=urllib.parse.urlencode(
                    {TAG_ANNEX_NAME: annex_name, TAG_ANNEX_OWNER: self.owner()}))
        return ref

    def get_bundle(self, annex_name: str) -> bytes | None:
        """The annex's config bundle (S3 GetObject), or None when it is not stored.

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: the call failed other than "not found".
        """
        bucket = self._need_outputs("get_bundle").bucket
        try:
            with aws_errors("s3.GetObject"):
                return make_client(self.settings, "s3").get_object(
                    Bucket=bucket, Key=bundle_key(annex_name))["Body"].read()
        except NotFoundError:
            return None

    def delete_bundle(self, ref: BundleRef) -> None:
        """Delete a bundle with S3 DeleteObject; a missing object is not an error.

        Raises:
            ProviderError: the call failed (e.g. the bucket is gone: NotFoundError).
        """
        with aws_errors("s3.DeleteObject"):
            make_client(self.settings, "s3").delete_object(Bucket=ref.bucket, Key=ref.key)

    def bundle_exists(self, annex_name: str) -> bool:
        """True when the annex's bundle is in the bucket (S3 HeadObject).

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: the call failed other than "not found".
        """
        bucket = self._need_outputs("bundle_exists").bucket
        try:
            with aws_errors("s3.HeadObject"):
                make_client(self.settings, "s3").head_object(Bucket=bucket,
                                                             Key=bundle_key(annex_name))
            return True
        except NotFoundError:
            return False

    # --- owners and orphans ----------------------------------------------------------------

    def annex_resources(self) -> list[AnnexResource]:
        """Every annex resource of any owner, each an
        :class:`~condor_annex.providers.aws.orphans.AnnexResource` with its owner (see
        :func:`condor_annex.providers.aws.orphans.inventory`).

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: a listing failed.
        """
        from condor_annex.providers.aws import orphans
        return orphans.inventory(self.settings, self._need_outputs("sweep"))

    # --- the annex's own role ---------------------------------------------------------------

    def ensure_annex_role(self, annex_name: str) -> str:
        """The annex's own instance profile ARN, made when missing (role
        ``condor-annex-<annex>`` reading only its bundle; see
        :mod:`condor_annex.providers.aws.annex_role`).

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: an IAM call failed.
        """
        from condor_annex.providers.aws import annex_role
        return annex_role.ensure_annex_role(self.settings, self._need_outputs("annex role"),
                                            annex_name, self.owner())

    def delete_annex_role(self, annex_name: str) -> bool:
        """Delete the annex's instance profile and role (missing ones are fine).  Returns
        True when something was deleted.

        Raises:
            ProviderError: an IAM call failed other than "not found".
        """
        from condor_annex.providers.aws import annex_role
        return annex_role.delete_annex_role(self.settings, annex_name)

    # --- leases ---------------------------------------------------------------------------

    def create_lease(self, annex_name: str, expires_at: datetime) -> LeaseRef:
        """Create the annex's lease: a one-time Scheduler schedule invoking the enforcer.

        Follows EventBridge Scheduler CreateSchedule; if the schedule exists
        (ConflictException) it is updated instead (UpdateSchedule), i.e. the lease moves.

        Args:
            annex_name: the annex.
            expires_at: aware datetime; rounded up to a whole second.

        Returns:
            The lease.

        Raises:
            NotSetUpError: no setup outputs.
            ProviderError: the call failed.
        """
        lease = self._lease_ref(annex_name, expires_at)
        sch = make_client(self.settings, "scheduler")
        try:
            with aws_errors("scheduler.CreateSchedule"):
                sch.create_schedule(**self._schedule_params(lease))
        except InvalidRequestError as e:
            if e.code != "ConflictException":
                raise
            with aws_errors("scheduler.UpdateSchedule"):
                sch.update_schedule(**self._schedule_params(lease))
        return lease

    def extend_lease(self, lease: LeaseRef, expires_at: datetime) -> LeaseRef:
        """Move a lease's end (Scheduler UpdateSchedule, with a new time and event).

        Args:
            lease: the lease to move.
            expires_at: the new end, aware datetime; rounded up to a whole second.

        Returns:
            The moved lease.

        Raises:
            NotFoundError: the annex has no lease.
            NotSetUpError: no setup outputs.
            ProviderError: the call failed.
        """
        moved = self._lease_ref(lease.annex_name, expires_at)
        with aws_errors("scheduler.UpdateSchedule"):
            make_client(self.settings, "scheduler").update_schedule(
                **self._schedule_params(moved))
        return moved

    def get_lease(self, annex_name: str) -> LeaseRef | None:
        """The annex's lease, or None (Scheduler GetSchedule).

        Raises:
            ProviderError: the call failed other than "not found".
        """
        return self._get_lease_by_schedule(lease_schedule_name(annex_name))

    def delete_lease(self, lease: LeaseRef) -> None:
        """Delete a lease (Scheduler DeleteSchedule); a missing one is not an error.

        Raises:
            ProviderError: the call failed other than "not found".
        """
        try:
            with aws_errors("scheduler.DeleteSchedule"):
                make_client(self.settings, "scheduler").delete_schedule(
                    Name=lease.schedule_name, GroupName=SCHEDULE_GROUP)
        except NotFoundError:
            pass

    def list_leases(self) -> list[LeaseRef]:
        """Every annex lease in the region: Scheduler ListSchedules (name prefix
        ``annex-lease-``, paginated), then GetSchedule for each.  The local cloud fires the due
        ones with :func:`lease_event`.

        Raises:
            ProviderError: a call failed.
        """
        sch = make_client(self.settings, "scheduler")
        names: list[str] = []
        with aws_errors("scheduler.ListSchedules"):
            for page in sch.get_paginator("list_schedules").paginate(
                    NamePrefix=_setup.LEASE_PREFIX, GroupName=SCHEDULE_GROUP):
                names += [s["Name"] for s in page.get("Schedules", [])]
        leases = (self._get_lease_by_schedule(n, sch) for n in names)
        return [lease for lease in leases if lease is not None]

    def lease_event(self, lease: LeaseRef) -> dict[str, Any]:
        """The enforcer's input for ``lease`` (what the schedule sends to the Lambda)."""
        outputs = self._need_outputs("lease")
        return {
            "AnnexName": lease.annex_name,
            "S3BucketName": outputs.bucket,
            "BundleKey": bundle_key(lease.annex_name),
            "LeaseExpiration": int(lease.expires_at.timestamp()),
            "ScheduleName": lease.schedule_name,
            "ScheduleGroup": SCHEDULE_GROUP,
            "AnnexOwner": self.owner(),   # schedules take no tags: the sweep reads it here
        }

    @staticmethod
    def _lease_ref(annex_name: str, expires_at: datetime) -> LeaseRef:
        if expires_at.tzinfo is None:
            raise InvalidRequestError(f"lease of {annex_name}: expires_at must be aware (UTC)",
                                      code="NaiveDatetime")
        whole = datetime.fromtimestamp(math.ceil(expires_at.timestamp()), timezone.utc)
        return LeaseRef(annex_name, lease_schedule_name(annex_name), whole)

    def _schedule_params(self, lease: LeaseRef) -> dict[str, Any]:
        # The owner rides in the event: schedules take no tags.  The enforcer ignores it.
        outputs = self._need_outputs("lease")
        return {
            "Name": lease.schedule_name,
            "GroupName": SCHEDULE_GROUP,
            "ScheduleExpression": f"at({lease.expires_at:%Y-%m-%dT%H:%M:%S})",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "ActionAfterCompletion": "NONE",
            "Description": f"condor-annex lease of annex {lease.annex_name}",
            "Target": {
                "Arn": outputs.lease_function_arn,
                "RoleArn": outputs.scheduler_role_arn,
                "Input": json.dumps(self.lease_event(lease)),
                "RetryPolicy": dict(LEASE_RETRY_POLICY),
            },
        }

    def _get_lease_by_schedule(self, schedule_name: str, sch: Any = None) -> LeaseRef | None:
        sch = sch or make_client(self.settings, "scheduler")
        try:
            with aws_errors("scheduler.GetSchedule"):
                schedule = sch.get_schedule(Name=schedule_name, GroupName=SCHEDULE_GROUP)
        except NotFoundError:
            return None
        return _lease_from_schedule(schedule)


def _lease_from_schedule(schedule: dict[str, Any]) -> LeaseRef | None:
    """LeaseRef from a GetSchedule reply: the event's LeaseExpiration, else the ``at()`` time."""
    name = schedule["Name"]
    annex = name[len(_setup.LEASE_PREFIX):] if name.startswith(_setup.LEASE_PREFIX) else name
    try:
        event = json.loads(schedule.get("Target", {}).get("Input") or "{}")
        annex = event.get("AnnexName", annex)
        expires = datetime.fromtimestamp(int(event["LeaseExpiration"]), timezone.utc)
    except (ValueError, KeyError, TypeError):
        expr = schedule.get("ScheduleExpression", "")
        if not (expr.startswith("at(") and expr.endswith(")")):
            return None
        expires = datetime.fromisoformat(expr[3:-1]).replace(tzinfo=timezone.utc)
    return LeaseRef(annex_name=annex, schedule_name=name, expires_at=expires)


def _cloud_instance(inst: dict[str, Any]) -> CloudInstance:
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    launch = inst.get("LaunchTime")
    if isinstance(launch, datetime):
        launch = launch.astimezone(timezone.utc)
    return CloudInstance(
        instance_id=inst["InstanceId"],
        annex_name=tags.get(TAG_ANNEX_NAME, ""),
        state=inst.get("State", {}).get("Name", ""),
        instance_type=inst.get("InstanceType", ""),
        launch_time=launch,
        client_token=inst.get("ClientToken", "") or "",
        launch_token=tags.get(TAG_LAUNCH_TOKEN, ""),
        private_ip=inst.get("PrivateIpAddress", "") or "",
        public_ip=inst.get("PublicIpAddress", "") or "",
        lease_end=_tag_time(tags.get(TAG_LEASE_END, "")),
        # EC2 names only "spot" and "scheduled"; on-demand instances have no InstanceLifecycle.
        lifecycle="spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand",
        state_reason=(inst.get("StateReason") or {}).get("Code", "") or "",
        az=(inst.get("Placement") or {}).get("AvailabilityZone", "") or "",
    )


def _tag_time(value: str) -> datetime | None:
    """A ``htcondor:LeaseEnd`` value (epoch seconds) as aware UTC, None when absent or bad."""
    try:
        return datetime.fromtimestamp(int(value), timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
