"""The provider contract, written once.  Implementations say "See providers/base.py".

Assumptions every caller may rely on (after Ray autoscaler v2's ``ICloudInstanceProvider``):

* The cloud is **eventually consistent**: an instance just launched may not be listed yet, and
  :class:`~condor_annex.errors.NotFoundError` from a query may mean "not visible yet".
* ``launch`` and ``terminate`` are **asynchronous**: they return once the cloud accepted the
  request; instances reach ``running`` / ``terminated`` later.
* ``launch`` is **idempotent per client token** (on real AWS; see local-cloud.md for moto's gap).
* Tags are the truth about what exists: :meth:`Provider.query_instances` finds instances by the
  tag ``htcondor:AnnexName`` (an exact match, never a prefix), never from our own records.
* Every method raises only :class:`~condor_annex.errors.ProviderError` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from condor_annex.model import (BundleRef, CloudInstance, FleetRequest, FleetResult, FleetsEnded,
                                LaunchRequest, LaunchResult, LeaseRef, LeaseTagged,
                                SetupOutputs)


class Provider(Protocol):
    """One cloud, reached through one SDK.  All times are aware UTC datetimes."""

    name: str

    def setup(self, *, progress: Callable[[str], None] | None = None) -> SetupOutputs:
        """Create (or find) the cloud-side pieces: bucket, lease enforcer, role and instance
        profile, security group, key pair.  Idempotent: a second call returns the same outputs.
        ``progress`` is called with the deployment's status while it waits."""
        ...

    def teardown(self, outputs: SetupOutputs, *, force: bool = False) -> None:
        """Delete what :meth:`setup` made.

        Raises:
            InvalidRequestError: leases remain and ``force`` is False.
        """
        ...

    def check_setup(self, outputs: SetupOutputs) -> list[tuple[str, bool, str]]:
        """Inspect each resource ``setup`` made.

        Returns:
            one (resource, ok, detail) row per resource.
        """
        ...

    def put_bundle(self, annex_name: str, bundle: bytes) -> BundleRef:
        """Upload an annex's config bundle (a tar.gz, bytes) to the private bucket."""
        ...

    def get_bundle(self, annex_name: str) -> bytes | None:
        """The annex's stored config bundle (tar.gz bytes), or ``None`` when there is none."""
        ...

    def delete_bundle(self, ref: BundleRef) -> None:
        """Delete a bundle; deleting a missing bundle is not an error."""
        ...

    def bundle_exists(self, annex_name: str) -> bool:
        """True when the annex's bundle is stored."""
        ...

    def ensure_annex_role(self, annex_name: str) -> str:
        """The annex's own instance profile (an identity that may read only the annex's
        bundle), made when missing; returns its ARN."""
        ...

    def delete_annex_role(self, annex_name: str) -> bool:
        """Delete the annex's own instance profile and role (once its instances are gone);
        missing ones are not an error.  True when something was deleted."""
        ...

    def create_lease(self, annex_name: str, expires_at: datetime) -> LeaseRef:
        """Create the annex's lease: the enforcer runs at ``expires_at`` and ends the annex.
        Creating a lease that exists moves it (same as :meth:`extend_lease`)."""
        ...

    def extend_lease(self, lease: LeaseRef, expires_at: datetime) -> LeaseRef:
        """Move a lease's end time.

        Raises:
            NotFoundError: the annex has no lease.
        """
        ...

    def get_lease(self, annex_name: str) -> LeaseRef | None:
        """Return the annex's lease, or ``None``."""
        ...

    def delete_lease(self, lease: LeaseRef) -> None:
        """Delete a lease; deleting a missing lease is not an error."""
        ...

    def list_leases(self) -> list[LeaseRef]:
        """Every annex lease in the region."""
        ...

    def launch(self, request: LaunchRequest, *,
               notify: Callable[[str], None] | None = None) -> LaunchResult:
        """Launch ``request.count`` instances in **one** request with ``request.client_token``,
        tagged ``htcondor:AnnexName``, ``htcondor:LaunchToken`` (the token) and
        ``htcondor:LeaseEnd`` (``request.lease_end``), IMDSv2 required with a PUT hop limit of
        1, shutdown behaviour *terminate*, in the first of ``request.subnet_ids`` if any.
        Throttling, server errors and lost replies are retried with the same token; before a resend, instances carrying the token are
        looked up, so a launch never makes more than ``count`` instances.  ``notify`` gets one
        line per retry.

        Raises:
            CapacityError, QuotaError, InvalidRequestError: not retried.
            ProviderError: retries ran out; ``ambiguous`` when instances may exist.
        """
        ...

    def launch_fleet(self, request: FleetRequest, *,
                     notify: Callable[[str], None] | None = None) -> FleetResult:
        """Request ``request.target_capacity`` weighted units of Spot capacity in **one** fleet
        request with ``request.client_token``; the fleet stops placing and replacing
        instances at ``request.valid_until`` but does not terminate them then (the lease
        does).  The fleet, its launch template and its instances are tagged
        ``htcondor:AnnexName``, ``htcondor:LaunchToken`` and ``htcondor:LeaseEnd``; its
        instances get IMDSv2 with hop limit 1 and tags in metadata.  Retried as :meth:`launch`
        is."""
        ...

    def end_fleets(self, annex_name: str, *, launch_token: str = "") -> FleetsEnded:
        """Cancel or delete every fleet of the annex (terminating its instances) and delete its
        launch template; finding nothing is not an error.  With ``launch_token``, only the
        fleets that launch request made, and the template only if it made it."""
        ...

    def query_instances(self, annex_name: str | None = None, *,
                        include_terminated: bool = False,
                        launch_token: str = "") -> dict[str, CloudInstance]:
        """Instances of one annex (or of every annex when ``annex_name`` is None), by tag,
        paginated; with ``launch_token`` only those of that launch request.  Returns
        instance id -> :class:`CloudInstance`."""
        ...

    def set_lease_end(self, annex_name: str, lease_end: datetime) -> LeaseTagged:
        """Rewrite the lease end tag ``htcondor:LeaseEnd`` on the annex's live instances,
        fleets and launch template (in batches; idempotent).  Returns what was tagged, with
        each fleet's unchangeable ``ValidUntil``."""
        ...

    def missing_subnets(self, subnet_ids: Sequence[str]) -> list[str]:
        """Those of ``subnet_ids`` that do not exist (nothing is created)."""
        ...

    def request_stop(self, instance_ids: Sequence[str], when: datetime) -> None:
        """Ask instances to leave the pool gracefully (their agent powers them off)."""
        ...

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances (in batches of at most 1000); unknown ids are not an error."""
        ...
