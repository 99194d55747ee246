"""The local cloud: an AWS emulator whose instances are real HTCondor execute nodes.

One daemon process (``condor_annex local up`` starts it; ``local down`` stops it) owns:

* a **moto server** on the host's loopback, the AWS endpoint for the CLI (boto3 gets this
  endpoint and fake credentials, never real ones), behind the AWS gateway (:mod:`.emulator`,
  :mod:`.gateway`);
* a **central manager + submit node** (collector, negotiator, schedd from Debian's HTCondor
  packages in the trixie chroot) in namespace ``<prefix>cm`` (:mod:`.central_manager`,
  :mod:`.chroot`);
* the **instance runner** (:mod:`.instances`): every EC2 instance that is pending or running
  boots as a stock image does on EC2 (:mod:`.node`) — its own network namespace and overlay
  root, real cloud-init run by a stand-in init (:mod:`.instance_root`, :mod:`.instance_init`,
  :mod:`.images`) executing the launch's user data, console served by GetConsoleOutput
  (:mod:`.console`); terminating the instance through the EC2 API stops the node (SIGTERM, as
  an ACPI shutdown would), and the node powering off (its master exits) terminates the
  instance, as ``InstanceInitiatedShutdownBehavior=terminate`` does on EC2; what moto leaves out
  of instances comes from :mod:`.identities` (metadata, role credentials) and
  :mod:`.fleet_members` (a fleet's profile and shutdown behaviour);
* one **IMDSv2 endpoint** in the hub namespace that answers each instance by its source address,
  at 169.254.169.254 inside the instance namespaces (and 10.200.0.1);
* the **schedule firing and Lambda invocation** that moto lacks, with AWS's timing: schedules
  are read back and fired as EventBridge Scheduler would (:mod:`.scheduler`: a one-time
  schedule at a random second of its minute), and each instance that ends becomes EventBridge's
  EC2 state-change event (:mod:`.events`); both invoke the real lease function's code
  (:mod:`condor_annex.lease.handler`, its clients from :mod:`.lease_clients`) in-process,
  asynchronously, with Lambda's retries and on-failure destination (:mod:`.lambda_async`), on
  one clock (:mod:`.clock`), with fault injection (:mod:`.inject`).

This module holds the daemon itself: its state dir and the state file it publishes
(:class:`LocalCloudState`), the machine-wide session lock, bring-up and tear-down
(:meth:`LocalCloud.start`, :meth:`LocalCloud.shutdown`), the main loop (:meth:`LocalCloud.run`)
and the entry point (:func:`main`).  Fixed paths and ports are in :mod:`.layout`.

Safety: everything listens on loopback or on addresses inside namespaces this module created;
169.254.169.254 exists only inside the namespaces (the host never routes there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condor_annex import config as user_config
from condor_annex.config import AwsSettings
from condor_annex.providers.local import central_manager, emulator, instance_root as ir, netns
from condor_annex.providers.local.chroot import chroot_run, ensure_root, reset_names
from condor_annex.providers.local.events import state_change_event, state_change_targets
from condor_annex.providers.local.identities import role_access_key
from condor_annex.providers.local.imds import InstanceMetadata
from condor_annex.providers.local.inject import FILE_NAME as INJECT_FILE, Injections
from condor_annex.providers.local.instances import BOOT_WORKERS, PROFILE_WAIT_S, InstanceRunner
from condor_annex.providers.local.layout import (AWS_PORT, BUILD_SCRIPT, CM_DIR, CM_HOSTNAME,
                                                 COLLECTOR_PORT, CONFIG_BLOCK, FAKE_KEY,
                                                 IMDS_PORT, NODES_DIR, ROOT, TRUST_DOMAIN)
from condor_annex.providers.local.lease_clients import MotoFleetEc2, handler_clients
from condor_annex.providers.local.processes import stop_group
from condor_annex.providers.local.relay import Relay

if TYPE_CHECKING:
    from condor_annex.providers.local.gateway import Gateway
    from condor_annex.providers.local.images import LocalImages
    from condor_annex.providers.local.imds import ImdsServer
    from condor_annex.providers.local.lambda_async import AsyncInvoker
    from condor_annex.providers.local.scheduler import Fired, Scheduler

# Names of the local cloud that callers (the CLI's local verbs, tests, benchmarks) reach here.
__all__ = ["AWS_PORT", "BOOT_WORKERS", "BUILD_SCRIPT", "CM_DIR", "CM_HOSTNAME", "CONFIG_BLOCK",
           "FAKE_KEY", "IMDS_PORT", "NODES_DIR", "PROFILE_WAIT_S", "ROOT", "STATE_DIR",
           "TRUST_DOMAIN", "LocalCloud", "LocalCloudState", "MotoFleetEc2", "chroot_run",
           "ensure_root", "exclusive_session", "main", "role_access_key"]

log = logging.getLogger("condor_annex.local")

#: The daemon's state dir (``$CONDOR_ANNEX_LOCAL_STATE``): state file, pid, logs, injections,
#: instance roots and consoles, image layers.  Read here at each use (tests point it at a
#: temporary directory); the pieces below the daemon are given it.
STATE_DIR = Path(os.environ.get("CONDOR_ANNEX_LOCAL_STATE", "/run/condor-annex/local"))


@dataclass
class LocalCloudState:
    """What ``local up`` publishes in ``STATE_DIR/state.json`` for the CLI and the tests."""

    pid: int
    endpoint_url: str        # the emulator on the host's loopback
    collector: str           # the collector, reachable from the host (relay)
    annex_collector: str     # the collector, as instances reach it
    root: str                # the chroot
    image_id: str
    token_command: str
    started_at: float

    def save(self) -> None:
        """Write the state file (mode 644; it holds no secret)."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "state.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> "LocalCloudState | None":
        """Read the state file; ``None`` when no local cloud is up."""
        try:
            data = json.loads((STATE_DIR / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cls(**data)


#: How deeply this process holds :func:`exclusive_session` (flock locks conflict between two
#: opens of one file even in one process: a nested session would wait for itself forever).
_session_depth = 0


@contextlib.contextmanager
def exclusive_session(timeout_s: float = 3600):
    """Hold the machine-wide local-cloud lock (``flock`` on ``STATE_DIR/../session.lock``).

    The local cloud is one per machine (its addresses and chroot paths are fixed), so the demo,
    the end-to-end tests and the benchmarks each hold this lock for their whole run and queue
    behind each other instead of tearing each other's cloud down.  Re-entrant within one
    process (one pytest session holds it for the e2e tests and then for tests/original).

    Raises:
        TimeoutError: the lock was not free within ``timeout_s`` seconds.
    """
    global _session_depth
    if _session_depth:   # this process holds it already (the e2e tests, then tests/original)
        _session_depth += 1
        try:
            yield
        finally:
            _session_depth -= 1
        return
    STATE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR.parent / "session.lock", "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another local-cloud session (demo, test or benchmark) "
                                       f"held the lock for {timeout_s:.0f} s") from None
                time.sleep(1)
        _session_depth = 1
        try:
            yield
        finally:
            _session_depth = 0
            fcntl.flock(f, fcntl.LOCK_UN)


class LocalCloud:
    """The daemon.  ``start()`` brings everything up; ``run()`` reconciles until stopped."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.moto: subprocess.Popen | None = None
        self.gateway: Gateway | None = None   # the AWS gateway in front of moto (start)
        self.images: LocalImages | None = None
        self.runner: InstanceRunner | None = None   # the instances' nodes (start)
        #: The fault injections (``local inject``), read afresh at each use.
        self.injections = Injections(STATE_DIR / INJECT_FILE)
        self.cm: subprocess.Popen | None = None
        self.relays: list[Relay] = []
        self.imds: ImdsServer | None = None
        self.settings: AwsSettings | None = None   # the CLI's settings (start)
        self.state: LocalCloudState | None = None
        self.lambda_queue: AsyncInvoker | None = None   # (run)
        self.scheduler: Scheduler | None = None   # (run)
        self._last_lease_check = 0.0

    # ---- bring-up -------------------------------------------------------------------------
    def start(self) -> LocalCloudState:
        """Bring up the emulator, namespaces, relays, IMDS and central manager; publish state."""
        from condor_annex.providers.local.identities import InstanceIdentities
        from condor_annex.providers.local.imds import ImdsServer
        t0 = time.monotonic()
        ensure_root()
        log.info("chroot ready (%.1f s)", time.monotonic() - t0)
        netns.delete_all()
        netns.create_hub()
        netns.create_host("cm", netns.CM_ADDR)
        reset_names()
        for d in ("instances", "images"):
            shutil.rmtree(STATE_DIR / d, ignore_errors=True)
        gateway_port = self._start_aws()
        log.info("AWS emulator on 127.0.0.1:%d (%.1f s)", gateway_port, time.monotonic() - t0)
        self.settings = emulator.account_settings(STATE_DIR, gateway_port)
        assert self.images is not None
        self.runner = InstanceRunner(
            self._client, self.images,
            InstanceIdentities(self._client, self.gateway, self.settings.region),
            self.injections, STATE_DIR, self._instance_ended)
        hub = netns.prefix() + "hub"
        self.relays.append(Relay(netns.socket_in_netns(hub, netns.HUB_ADDR, AWS_PORT),
                                 lambda: netns.connect_in_netns(None, "127.0.0.1", gateway_port),
                                 "aws").start())
        host_listener = emulator.loopback_listener()
        self.relays.append(Relay(host_listener,
                                 lambda: netns.connect_in_netns(hub, netns.CM_ADDR,
                                                                COLLECTOR_PORT),
                                 "collector").start())
        # The submit host (the CM namespace) reaches the AWS endpoint and the collector at the
        # same loopback addresses as the host, so a daemon that runs there with the user's
        # config (condor_annexd under the pool's master, .annexd_master) also reaches the
        # schedd, which only the CM namespace can.
        cm_ns = netns.prefix() + "cm"
        collector_port = host_listener.getsockname()[1]
        self.relays.append(Relay(netns.socket_in_netns(cm_ns, "127.0.0.1", gateway_port),
                                 lambda: netns.connect_in_netns(None, "127.0.0.1", gateway_port),
                                 "cm-aws").start())
        self.relays.append(Relay(netns.socket_in_netns(cm_ns, "127.0.0.1", collector_port),
                                 lambda: netns.connect_in_netns(cm_ns, netns.CM_ADDR,
                                                                COLLECTOR_PORT),
                                 "cm-collector").start())
        self.imds = ImdsServer(self._metadata_for,
                               sock=netns.socket_in_netns(hub, netns.HUB_ADDR, IMDS_PORT),
                               extra_socks=(netns.socket_in_netns(hub, netns.IMDS_ADDR, 80),))
        self.imds.start()
        self.cm = central_manager.start(STATE_DIR)
        collector = f"127.0.0.1:{host_listener.getsockname()[1]}"
        central_manager.wait_for_collector(self.cm)
        log.info("central manager up, collector relayed at %s (%.1f s)", collector,
                 time.monotonic() - t0)
        self.state = LocalCloudState(
            pid=os.getpid(), endpoint_url=f"http://127.0.0.1:{gateway_port}", collector=collector,
            annex_collector=f"{netns.CM_ADDR}:{COLLECTOR_PORT}", root=str(ROOT),
            image_id=self._default_image(), token_command=central_manager.TOKEN_COMMAND,
            started_at=time.time())
        log.info("default image %s (%.1f s)", self.state.image_id, time.monotonic() - t0)
        self.state.save()
        self._write_user_config()
        return self.state

    def _start_aws(self) -> int:
        """Start the moto server and, in this process, the AWS gateway in front of it
        (:mod:`~condor_annex.providers.local.gateway`: client-token idempotency and the AWS
        rules moto forgives, no fault rules), with the rules of the local instances
        (CreateImage layers, GetConsoleOutput); returns the **gateway's** port, the endpoint of
        the CLI (user config) and of instances (the AWS_PORT relay).

        In-process rather than ``python -m ...gateway``: its periodic rules (fleets reaching
        ValidUntil) run from :meth:`run` with the gateway's own records, and there is no
        second daemon to supervise; its work is forwarding (I/O), not CPU."""
        from condor_annex.providers.local.console import ConsoleOutput
        from condor_annex.providers.local.gateway import Gateway
        from condor_annex.providers.local.images import LocalImages
        from condor_annex.providers.local.state_reasons import StateReasons
        self.moto, moto_port = emulator.start_moto(STATE_DIR)
        gateway = self.gateway = Gateway(f"127.0.0.1:{moto_port}").start()
        self.images = LocalImages(gateway, STATE_DIR, ROOT, self._upper_of)
        gateway.strict_rules += [self.images, ConsoleOutput(
            gateway, STATE_DIR, lambda iid: self.runner is not None and iid in self.runner.nodes),
            StateReasons(   # why an instance ended, where it was not an API call
                gateway, lambda: self.runner.interruptions.spot_terminated()
                if self.runner is not None else set(),
                lambda iid: self.runner is not None and iid in self.runner.nodes,
                lambda: self.runner.os_shutdown() if self.runner is not None else set())]
        log.info("AWS gateway %s in front of moto on 127.0.0.1:%d", gateway.url, moto_port)
        return gateway.port

    def _client(self, service: str) -> Any:
        from condor_annex.providers.aws.session import make_client
        assert self.settings is not None, "the local cloud is not started"
        # Not paced by the account's request buckets: these calls stand for AWS itself.
        return make_client(self.settings, service, paced=False)

    def _upper_of(self, iid: str) -> Path | None:
        return ir.instances_dir(STATE_DIR) / iid / "upper"

    def _default_image(self) -> str:
        """Register the stock AMIs (and their public parameters); the debian-13 amd64 one."""
        assert self.images is not None
        return self.images.register_stock(self._client("ec2"))[("debian-13", "x86_64")]

    def _write_user_config(self) -> None:
        assert self.state is not None and self.settings is not None
        user_config.write_block(CONFIG_BLOCK, {
            "ANNEX_AWS_ENDPOINT_URL": self.state.endpoint_url,
            "ANNEX_DEFAULT_AWS_REGION": self.settings.region,
            "ANNEX_DEFAULT_ACCESS_KEY_FILE": self.settings.access_key_file,
            "ANNEX_DEFAULT_SECRET_KEY_FILE": self.settings.secret_key_file,
            "ANNEX_INSTANCE_AWS_ENDPOINT_URL": f"http://{netns.HUB_ADDR}:{AWS_PORT}",
            "COLLECTOR_HOST": self.state.collector,
            "ANNEX_COLLECTOR": self.state.annex_collector,
            "ANNEX_TRUST_DOMAIN": TRUST_DOMAIN,
            "ANNEX_TOKEN_COMMAND": self.state.token_command,
            # The owner (root) on the submit host: its tools read the central manager's
            # SEC_TOKEN_DIRECTORY; an annex's administrator token goes there (annex_admin.py).
            "ANNEX_TOKEN_DIRECTORY": str(ROOT / CM_DIR.lstrip("/") / "etc" / "tokens.d"),
        })

    # ---- the main loop --------------------------------------------------------------------
    def run(self, interval_s: float = 0.1) -> None:
        """Reconcile instances and fire due schedules until :meth:`request_stop`.

        Schedules are read every second (:mod:`~condor_annex.providers.local.scheduler`) and
        their Lambda targets invoked asynchronously in worker threads
        (:mod:`~condor_annex.providers.local.lambda_async`), so a lease enforcer that waits out
        its minute does not stall this loop.  Passes are ``interval_s`` apart, or twice as long
        as the last pass took to list the instances when that is longer (a large cloud is
        polled less often and the emulator keeps CPU for the nodes)."""
        from condor_annex.providers.local.clock import Clock
        from condor_annex.providers.local.lambda_async import AsyncInvoker
        from condor_annex.providers.local.scheduler import Scheduler
        # One clock for every AWS delay here (CONDOR_ANNEX_TIME_SCALE); its sleeps end when
        # the daemon stops, so a sleeping lease enforcer never holds up the shutdown.
        clock = Clock(stop=self.stop_event)
        if self.runner is not None:   # Spot interruption notices run out on it too
            self.runner.interruptions.clock = clock
        queue = self.lambda_queue = AsyncInvoker(self._client, self._handler_clients, clock,
                                                 self.injections).start()
        self.scheduler = Scheduler(self._client, queue, clock, self.injections)
        log.info("Scheduler and Lambda emulation on (time scale %g)", clock.scale)
        try:
            while not self.stop_event.is_set():
                listed_s = 0.0
                try:
                    listed_s = self.reconcile()
                except Exception:  # noqa: BLE001 - the daemon keeps going; the log says why
                    log.exception("reconcile failed")
                # Every second: a one-time schedule fires at a random second of its minute.
                if time.monotonic() - self._last_lease_check >= 1:
                    self._last_lease_check = time.monotonic()
                    try:
                        self.fire_due_leases()
                    except Exception:  # noqa: BLE001
                        log.exception("firing schedules failed")
                    try:   # what AWS does as time passes: fleets reach their ValidUntil
                        if self.gateway is not None:
                            self.gateway.tick()
                    except Exception:  # noqa: BLE001
                        log.exception("gateway tick failed")
                self.stop_event.wait(max(interval_s, 2 * listed_s))
        finally:
            queue.stop()

    def request_stop(self, *_: object) -> None:
        """Signal handler: leave :meth:`run` at the next tick."""
        self.stop_event.set()

    def reconcile(self) -> float:
        """One pass of the instance runner (:meth:`InstanceRunner.reconcile`).

        Returns:
            seconds spent listing the instances (DescribeInstances), for pacing.
        """
        return self.runner.reconcile() if self.runner is not None else 0.0

    def _metadata_for(self, address: str) -> InstanceMetadata | None:
        return self.runner.metadata_for(address) if self.runner is not None else None

    def _instance_ended(self, instance_id: str) -> None:
        """Deliver an "EC2 Instance State-change Notification" (terminated) to the targets of
        the EventBridge rules that match it (setup's rule: the lease function), as EventBridge
        does on AWS (moto never emits these events; :mod:`.events`).  EventBridge invokes
        Lambda asynchronously: the event is queued (:class:`~condor_annex.providers.local.
        lambda_async.AsyncInvoker`, retries and on-failure destination included), never run
        in this loop."""
        queue = self.lambda_queue
        if queue is None or self.stop_event.is_set():   # not running its loop (shutdown)
            return
        try:
            targets = state_change_targets(self._client("events"))
        except Exception:  # noqa: BLE001 - the lease and the sweep still end the annex
            log.exception("listing the EventBridge rules for %s failed", instance_id)
            return
        assert self.settings is not None
        event = state_change_event(instance_id, self.settings.region)
        for rule, arn in targets:
            queue.invoke(arn, event, source=f"rule {rule} ({instance_id} terminated)")

    def _handler_clients(self) -> dict:
        """The lease handler's clients (:func:`~condor_annex.providers.local.lease_clients.
        handler_clients`)."""
        return handler_clients(self._client)

    def fire_due_leases(self) -> list[Fired]:
        """Fire the schedules that are due now, as EventBridge Scheduler would (moto never
        fires one): one-time ``at()`` schedules at a random second of their minute (or its
        first second with ``local inject schedule-early``), ``rate()`` schedules every period
        of the local cloud's clock; their Lambda targets are queued for asynchronous
        invocation.  See :mod:`condor_annex.providers.local.scheduler`.

        Returns:
            the :class:`~condor_annex.providers.local.scheduler.Fired` occurrences.
        """
        return self.scheduler.tick() if self.scheduler is not None else []

    # ---- tear-down ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop every node, the central manager, the relays, IMDS and the emulator; delete the
        namespaces, the state file and the user-config block."""
        t0 = time.monotonic()
        log.info("shutting down: %d node(s)", len(self.runner.nodes) if self.runner else 0)
        if self.runner is not None:
            self.runner.stop_all(timeout_s=25, grace_s=15)
        stop_group(self.cm, timeout_s=15)
        log.info("nodes and central manager stopped (%.1f s)", time.monotonic() - t0)
        for relay in self.relays:
            relay.stop()
        if self.imds:
            self.imds.stop()
        stop_group(self.moto, timeout_s=10)
        subprocess.run(["pkill", "-KILL", "-f", f"CONDOR_CONFIG={NODES_DIR}"], check=False)
        netns.delete_all()
        for d in ("instances", "images"):   # roots, consoles and CreateImage layers
            shutil.rmtree(STATE_DIR / d, ignore_errors=True)
        log.info("shut down (%.1f s)", time.monotonic() - t0)
        user_config.remove_block(CONFIG_BLOCK)
        for f in ("state.json", "access_key", "secret_key"):
            (STATE_DIR / f).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the daemon process: ``python -m condor_annex.providers.local.cloud``.

    Writes ``STATE_DIR/state.json`` when ready (the parent waits for it) and logs to
    ``STATE_DIR/cloud.log``; SIGTERM/SIGINT stop it and clean up everything it started.
    """
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    cloud = LocalCloud()
    signal.signal(signal.SIGTERM, cloud.request_stop)
    signal.signal(signal.SIGINT, cloud.request_stop)
    try:
        cloud.start()
        (STATE_DIR / "ready").write_text("ok\n")
        cloud.run()
    except Exception as e:  # noqa: BLE001
        log.exception("local cloud failed")
        (STATE_DIR / "failed").write_text(f"{e}\n")
        return 1
    finally:
        cloud.shutdown()
        (STATE_DIR / "ready").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
