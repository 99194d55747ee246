"""The provider contract, written once: every method the service layer (``service/*.py``) and
the command line (``cli/*.py``) call on a provider.  Implementations say "See providers/base.py";
:mod:`condor_annex.providers.aws.contract` makes the type checker prove that
:class:`~condor_annex.providers.aws.provider.AwsProvider` satisfies it.

Assumptions every caller may rely on (after Ray autoscaler v2's ``ICloudInstanceProvider``):

* The cloud is **eventually consistent**: an instance just launched may not be listed yet, and
  :class:`~condor_annex.errors.NotFoundError` from a query may mean "not visible yet".
* ``launch`` and ``terminate`` are **asynchronous**: they return once the cloud accepted the
  request; instances reach ``running`` / ``terminated`` later.
* ``launch`` is **idempotent per client token** (on real AWS; see local-cloud.md for moto's gap).
* Tags are the truth about what exists: :meth:`Provider.query_instances` finds instances by the
  tag ``htcondor:AnnexName`` (an exact match, never a prefix), never from our own records.
* Cloud failures raise only :class:`~condor_annex.errors.ProviderError` subclasses; a method
  that needs what ``setup`` made (bucket, lease enforcer, roles) raises
  :class:`~condor_annex.errors.NotSetUpError` (a ``BadInputError``, exit 2) when the provider
  was built without setup outputs.
* All times are aware UTC :class:`~datetime.datetime` values; lease ends are whole seconds.
* Methods are safe to call again after any failure (create-or-find, delete-if-present), so a
  caller that crashed may simply repeat them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from condor_annex.model import (BundleRef, CloudInstance, FleetRequest, FleetResult, FleetsEnded,
                                LaunchRequest, LaunchResult, LeaseRef, LeaseTagged,
                                SetupOutputs)

if TYPE_CHECKING:   # the shape is AWS's today; it belongs in model.py once a second cloud comes
    from condor_annex.providers.aws.orphans import AnnexResource
    from condor_annex.providers.aws.pricing import Price


class Provider(Protocol):
    """One cloud, reached through one SDK.

    Attributes:
        name: the provider's short name, e.g. ``"aws"``.
    """

    name: str

    def owner(self) -> str:
        """The user's identity in this cloud: the value of tag ``htcondor:AnnexOwner`` on
        everything a create makes, so that colleagues sharing an account never touch each
        other's annexes.  Asked of the cloud once per provider, then remembered.

        Raises:
            ProviderError: the call failed.
        """
        ...

    def annex_resources(self) -> list[AnnexResource]:
        """Every annex resource in the region, of **any** owner (the caller filters by
        :meth:`owner`): instances, fleets, Spot Fleet requests, launch templates, lease
        schedules, bundles and annex roles, each with its annex, owner tag, creation time and
        lease end when the cloud says them.  Read-only.

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: a listing failed.
        """
        ...

    # --- setup ----------------------------------------------------------------------------

    def setup(self, *, progress: Callable[[str], None] | None = None) -> SetupOutputs:
        """Create (or find) the cloud-side pieces: bucket, lease enforcer, role and instance
        profile, security group, key pair.  Idempotent: a second call returns the same outputs.

        Args:
            progress: called with the deployment's status at each poll (about once a second).

        Returns:
            what was made; the provider keeps it for the bundle and lease methods.

        Raises:
            AuthError: the credentials may not deploy.
            ProviderError: the deployment failed (what it made is rolled back by the cloud).
        """
        ...

    def teardown(self, outputs: SetupOutputs, *, force: bool = False) -> None:
        """Delete what :meth:`setup` made.

        Raises:
            InvalidRequestError: leases remain and ``force`` is False.
            ProviderError: a deletion failed.
        """
        ...

    def check_setup(self, outputs: SetupOutputs) -> list[tuple[str, bool, str]]:
        """Inspect each resource ``setup`` made; nothing is changed.

        Returns:
            one ``(resource, ok, detail)`` row per resource, e.g.
            ``("bucket", True, "annex-abc")``.
        """
        ...

    # --- bundles --------------------------------------------------------------------------

    def put_bundle(self, annex_name: str, bundle: bytes) -> BundleRef:
        """Upload an annex's config bundle (a tar.gz, bytes) to the private bucket, replacing
        any (key ``config-<annex>.tar.gz``, encrypted at rest).

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the upload failed.
        """
        ...

    def get_bundle(self, annex_name: str) -> bytes | None:
        """The annex's stored config bundle (tar.gz bytes), or ``None`` when there is none.

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the call failed other than "not found".
        """
        ...

    def delete_bundle(self, ref: BundleRef) -> None:
        """Delete a bundle; deleting a missing bundle is not an error.

        Raises:
            ProviderError: the call failed (a bucket that is gone: ``NotFoundError``).
        """
        ...

    def bundle_exists(self, annex_name: str) -> bool:
        """True when the annex's bundle is stored.

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the call failed other than "not found".
        """
        ...

    # --- the annex's own identity ---------------------------------------------------------

    def ensure_annex_role(self, annex_name: str) -> str:
        """The annex's own instance profile (an identity that may read only the annex's
        bundle), made when missing.

        Returns:
            the instance profile's ARN.

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: an identity call failed.
        """
        ...

    def delete_annex_role(self, annex_name: str) -> bool:
        """Delete the annex's own instance profile and role (once its instances are gone);
        missing ones are not an error.

        Returns:
            True when something was deleted.

        Raises:
            ProviderError: a call failed other than "not found".
        """
        ...

    # --- leases ---------------------------------------------------------------------------

    def create_lease(self, annex_name: str, expires_at: datetime) -> LeaseRef:
        """Create the annex's lease: the enforcer runs at ``expires_at`` (aware, rounded up to
        a whole second) and ends the annex.  Creating a lease that exists moves it (same as
        :meth:`extend_lease`).

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the call failed.
        """
        ...

    def extend_lease(self, lease: LeaseRef, expires_at: datetime) -> LeaseRef:
        """Move a lease's end time to ``expires_at`` (aware, rounded up to a whole second).

        Returns:
            the moved lease.

        Raises:
            NotFoundError: the annex has no lease.
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the call failed.
        """
        ...

    def get_lease(self, annex_name: str) -> LeaseRef | None:
        """The annex's lease, or ``None`` when it has none.

        Raises:
            ProviderError: the call failed other than "not found".
        """
        ...

    def delete_lease(self, lease: LeaseRef) -> None:
        """Delete a lease; deleting a missing lease is not an error.

        Raises:
            ProviderError: the call failed other than "not found".
        """
        ...

    def list_leases(self) -> list[LeaseRef]:
        """Every annex lease in the region (paginated), in no particular order.

        Raises:
            ProviderError: the call failed.
        """
        ...

    # --- instances and fleets -------------------------------------------------------------

    def launch(self, request: LaunchRequest, *,
               notify: Callable[[str], None] | None = None) -> LaunchResult:
        """Launch ``request.count`` instances in **one** request with ``request.client_token``,
        tagged ``htcondor:AnnexName``, ``htcondor:LaunchToken`` (the token) and
        ``htcondor:LeaseEnd`` (``request.lease_end``), IMDSv2 required with a PUT hop limit of
        1, shutdown behaviour *terminate*, in the first of ``request.subnet_ids`` if any.
        All or nothing (``count`` instances or none).  Throttling, server errors and lost
        replies are retried with the same token; before a resend, instances carrying the token
        are looked up, so a launch never makes more than ``count`` instances.  ``notify`` gets
        one line per retry.

        Returns:
            the token and the ids of the instances launched.

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
        is (a fleet tagged with the token answers a lost reply).

        Returns:
            the token, the fleet id (``sfr-...`` or ``fleet-...``) and the instance ids known
            at once (an instant fleet's).

        Raises:
            CapacityError: an instant fleet got no Spot capacity.
            InvalidRequestError: a parameter was rejected.
            ProviderError: any other failure.
        """
        ...

    def end_fleets(self, annex_name: str, *, launch_token: str = "") -> FleetsEnded:
        """Cancel or delete every fleet of the annex (terminating its instances) and delete its
        launch template; finding nothing is not an error.  With ``launch_token``, only the
        fleets that launch request made, and the template only if it made it.

        Returns:
            the ids of what was ended.

        Raises:
            ProviderError: a call failed.
        """
        ...

    def query_instances(self, annex_name: str | None = None, *,
                        include_terminated: bool = False,
                        launch_token: str = "") -> dict[str, CloudInstance]:
        """Instances of one annex (or of every annex when ``annex_name`` is None), by tag,
        paginated; live ones only unless ``include_terminated``; with ``launch_token`` only
        those of that launch request.

        Returns:
            instance id -> :class:`CloudInstance`.

        Raises:
            ProviderError: the call failed.
        """
        ...

    def set_lease_end(self, annex_name: str, lease_end: datetime) -> LeaseTagged:
        """Rewrite the lease end tag ``htcondor:LeaseEnd`` on the annex's live instances,
        fleets and launch template (in batches; idempotent; instances gone meanwhile are
        skipped).

        Returns:
            what was tagged, with each fleet's unchangeable ``ValidUntil``.

        Raises:
            ProviderError: a call failed.
        """
        ...

    def missing_subnets(self, subnet_ids: Sequence[str]) -> list[str]:
        """Those of ``subnet_ids`` that do not exist, in the order given (nothing is created).

        Raises:
            ProviderError: the call failed.
        """
        ...

    def request_stop(self, instance_ids: Sequence[str], when: datetime) -> None:
        """Ask instances to leave the pool gracefully: they see ``when`` (their agent shuts
        HTCondor down gracefully and powers them off).  In batches of at most 1000.

        Raises:
            NotFoundError: an instance is gone meanwhile.
            ProviderError: the call failed.
        """
        ...

    def tag_instances(self, instance_ids: Sequence[str], tags: dict[str, str]) -> None:
        """Set tags (key -> value, replacing a value) on instances, in batches of at most
        1000; instances gone meanwhile are skipped.

        Raises:
            ProviderError: the call failed.
        """
        ...

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances (in batches of at most 1000); unknown ids are not an error.

        Raises:
            ProviderError: the call failed for another reason.
        """
        ...

    # --- what a node left behind ----------------------------------------------------------

    def console_output(self, instance_id: str) -> tuple[str, datetime | None, bool]:
        """An instance's console output (cloud-init's and the agent's lines).

        Returns:
            (text, "" when none yet; when the cloud captured it, aware UTC or None; True when
            it is the most recent output, False when only the output buffered at the last
            boot, shutdown or reboot could be had).

        Raises:
            NotFoundError: the instance does not exist (any more).
            ProviderError: the call failed otherwise.
        """
        ...

    def agent_log(self, annex_name: str, instance_id: str) -> bytes | None:
        """The log the instance's agent uploaded when its boot failed (UTF-8 text, at most
        256 KiB: its end), or None when it uploaded none.

        Raises:
            NotSetUpError: the provider has no setup outputs.
            ProviderError: the call failed other than "not found".
        """
        ...

    # --- prices (USD; each with its source and date: the cloud's price API, the day's cache,
    # or the snapshot shipped in the package when the API does not answer) ----------------------

    def on_demand_price(self, instance_type: str) -> Price:
        """The On-Demand (Linux) price of ``instance_type`` in the provider's region, per hour.

        Raises:
            NoPriceError: (a ``BadInputError``) no source knows the type; never a guess.
        """
        ...

    def spot_price(self, instance_type: str, az: str | None = None) -> Price:
        """The Spot price now of ``instance_type``, per hour: in ``az``, or the lowest of the
        region's zones (``Price.az`` names it).  When the cloud cannot say, the On-Demand price
        stands in (``Price.note`` says so).

        Raises:
            NoPriceError: no Spot price of the type in the region (or ``az``).
        """
        ...

    def volume_price(self) -> Price:
        """The price of the annex's volumes (gp3) per GB-month in the provider's region.

        Raises:
            NoPriceError: no source knows the region.
        """
        ...

    def public_ip_price(self) -> Price:
        """The price of one in-use public IPv4 address per hour."""
        ...
