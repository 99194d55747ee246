"""The local cloud: an AWS emulator whose instances are real HTCondor execute nodes.

One daemon process (``condor_annex local up`` starts it; ``local down`` stops it) owns:

* a **moto server** on the host's loopback, the AWS endpoint for the CLI (boto3 gets this
  endpoint and fake credentials, never real ones);
* a **central manager + submit node** (collector, negotiator, schedd from Debian's HTCondor
  packages in the trixie chroot) in namespace ``<prefix>cm``;
* the **instance runner**: every EC2 instance that is pending or running boots as a stock
  image does on EC2 — its own network namespace and overlay root, real cloud-init run by a
  stand-in init (:mod:`.instance_root`, :mod:`.instance_init`, :mod:`.images`) executing the
  launch's user data, console served by GetConsoleOutput (:mod:`.console`); terminating
  the instance through the EC2 API stops the node (SIGTERM, as an ACPI shutdown would), and the
  node powering off (its master exits) terminates the instance, as
  ``InstanceInitiatedShutdownBehavior=terminate`` does on EC2;
* one **IMDSv2 endpoint** in the hub namespace that answers each instance by its source address,
  at 169.254.169.254 inside the instance namespaces (and 10.200.0.1);
* the **schedule firing and Lambda invocation** that moto lacks, with AWS's timing: schedules
  are read back and fired as EventBridge Scheduler would (:mod:`.scheduler`: a one-time
  schedule at a random second of its minute), and each instance that ends becomes EventBridge's
  EC2 state-change event; both invoke the real lease function's code
  (:mod:`condor_annex.lease.handler`) in-process, asynchronously, with Lambda's retries and
  on-failure destination (:mod:`.lambda_async`), on one clock (:mod:`.clock`), with fault
  injection (:mod:`.inject`).

Safety: everything listens on loopback or on addresses inside namespaces this module created;
169.254.169.254 exists only inside the namespaces (the host never routes there).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from condor_annex import config as user_config
from condor_annex.config import AwsSettings
from condor_annex.pool import configs
from condor_annex.providers.local import instance_root as ir, netns
from condor_annex.providers.local.relay import Relay

log = logging.getLogger("condor_annex.local")

ROOT = Path(os.environ.get("CONDOR_ANNEX_ROOT", "/var/lib/condor-annex/root"))
STATE_DIR = Path(os.environ.get("CONDOR_ANNEX_LOCAL_STATE", "/run/condor-annex/local"))
BUILD_SCRIPT = Path(__file__).with_name("build_chroot.sh")
AWS_PORT = 4566          # the emulator, as seen from instances (hub namespace)
IMDS_PORT = 80           # the metadata endpoint, as seen from instances (hub namespace)
TRUST_DOMAIN = "condor-annex.local"
CM_HOSTNAME = "annex-cm"
CM_DIR = "/var/lib/condor-annex/cm"          # inside the chroot
NODES_DIR = "/var/lib/condor-annex/nodes"    # inside the chroot
CONFIG_BLOCK = "local cloud"
FAKE_KEY = "testing"    # moto accepts any credentials; these are not secrets
#: Nodes booted at once (namespace, files, agent start are mostly subprocesses).
BOOT_WORKERS = 4
#: Seconds a new instance without an instance profile waits before it boots: moto attaches a
#: launch's profile after listing its instances (EC2 has it at launch), so a node booted at once
#: found no role credentials and its agent backed off for up to a minute.
PROFILE_WAIT_S = 3.0


def role_access_key(role_name: str) -> str:
    """The access key id of role ``role_name``'s instance credentials on the local cloud:
    ``ASIA`` + 16 characters derived from the name (distinct per role, stable across restarts;
    moto checks no signature, the gateway knows which role a key is)."""
    return "ASIA" + hashlib.sha256(role_name.encode()).hexdigest()[:16].upper()


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


@contextlib.contextmanager
def exclusive_session(timeout_s: float = 3600):
    """Hold the machine-wide local-cloud lock (``flock`` on ``STATE_DIR/../session.lock``).

    The local cloud is one per machine (its addresses and chroot paths are fixed), so the demo,
    the end-to-end tests and the benchmarks each hold this lock for their whole run and queue
    behind each other instead of tearing each other's cloud down.

    Raises:
        TimeoutError: the lock was not free within ``timeout_s`` seconds.
    """
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
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def chroot_run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command inside the chroot (host namespace)."""
    return subprocess.run(["chroot", str(ROOT), *args], check=check, **kw)


def ensure_root() -> Path:
    """Build or restore (cached) and mount the trixie chroot; returns its path."""
    env = dict(os.environ, CONDOR_ANNEX_ROOT=str(ROOT))
    p = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise RuntimeError("building the HTCondor chroot failed (see messages above)")
    return ROOT


class Node:
    """One instance's execute node: namespace, process, metadata."""

    def __init__(self, instance_id: str, index: int) -> None:
        self.instance_id, self.index = instance_id, index
        self.address = netns.instance_address(index)
        self.hostname = "ip-" + self.address.replace(".", "-")
        self.ns_name = f"i{index}"
        self.dir = f"{NODES_DIR}/{instance_id}"
        self.proc: subprocess.Popen | None = None
        self.stop_sent_at: float | None = None
        self.metadata = None   # an imds.InstanceMetadata
        self.root = None       # an instance_root.InstanceRoot

    def boot(self, layers: list[Path], *, lease_margin_s: float | None = None) -> None:
        """Boot the instance over image ``layers`` (:mod:`.instance_root`): cloud-init runs
        the launch's user data; the process ends when the instance powers off.

        Args:
            lease_margin_s: the agent's ``--lease-margin-s`` (None: its default); the
                ``backstop-off`` injection passes a day (a unit drop-in in the instance)."""
        self.root = ir.InstanceRoot(STATE_DIR, self.instance_id, layers)
        self.root.prepare()
        ir.agent_dropin(self.root.upper, lease_margin_s)
        ns = netns.create_host(self.ns_name, self.address)
        self.metadata = dataclasses.replace(self.metadata, mac=netns.mac_address(ns))
        with open(self.root.base / "launcher.log", "ab") as logf:
            self.proc = subprocess.Popen(
                self.root.command(ns, self.hostname, ir.ec2_dmi(self.instance_id,
                                                                self.metadata.instance_type)),
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def stop(self) -> None:
        """Graceful stop (SIGTERM to the agent, which forwards it to the master)."""
        if self.proc and self.proc.poll() is None and self.stop_sent_at is None:
            self.stop_sent_at = time.monotonic()
            _signal_group(self.proc, signal.SIGTERM)

    def reap(self, grace_s: float = 20.0) -> bool:
        """True once the node's processes are gone (SIGKILL after ``grace_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc:
                _signal_group(self.proc, signal.SIGKILL)   # stragglers of the group
            return True
        if self.stop_sent_at and time.monotonic() - self.stop_sent_at > grace_s:
            _signal_group(self.proc, signal.SIGKILL)
        return False


def _age_s(inst: dict) -> float:
    """Seconds since an instance's LaunchTime (DescribeInstances)."""
    launched = inst.get("LaunchTime")
    if not isinstance(launched, datetime):
        return float("inf")
    return (datetime.now(timezone.utc) - launched).total_seconds()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalCloud:
    """The daemon.  ``start()`` brings everything up; ``run()`` reconciles until stopped."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.nodes: dict[str, Node] = {}
        self.by_address: dict[str, Node] = {}
        self.next_index = 0
        self.moto: subprocess.Popen | None = None
        self.gateway = None   # the AWS gateway in front of moto (set by _start_moto)
        self.injections = None   # the fault injections (set by run)
        self.cm: subprocess.Popen | None = None
        self.relays: list[Relay] = []
        self.imds = None
        self.state: LocalCloudState | None = None
        self._profiles: dict[str, str] = {}
        self._shutdown_behaviour: dict[str, str] = {}
        self._last_lease_check = 0.0

    # ---- bring-up -------------------------------------------------------------------------
    def start(self) -> LocalCloudState:
        """Bring up the emulator, namespaces, relays, IMDS and central manager; publish state."""
        t0 = time.monotonic()
        ensure_root()
        log.info("chroot ready (%.1f s)", time.monotonic() - t0)
        netns.delete_all()
        netns.create_hub()
        netns.create_host("cm", netns.CM_ADDR)
        self._bake_image()
        moto_port = self._start_moto()
        log.info("AWS emulator on 127.0.0.1:%d (%.1f s)", moto_port, time.monotonic() - t0)
        self.settings = self._aws_settings(moto_port)
        hub = netns.prefix() + "hub"
        self.relays.append(Relay(netns.socket_in_netns(hub, netns.HUB_ADDR, AWS_PORT),
                                 lambda: netns.connect_in_netns(None, "127.0.0.1", moto_port),
                                 "aws").start())
        host_listener = _loopback_listener()
        self.relays.append(Relay(host_listener,
                                 lambda: netns.connect_in_netns(hub, netns.CM_ADDR, 9618),
                                 "collector").start())
        from condor_annex.providers.local.imds import ImdsServer
        self.imds = ImdsServer(self._metadata_for,
                               sock=netns.socket_in_netns(hub, netns.HUB_ADDR, IMDS_PORT),
                               extra_socks=(netns.socket_in_netns(hub, netns.IMDS_ADDR, 80),))
        self.imds.start()
        self._start_central_manager()
        collector = f"127.0.0.1:{host_listener.getsockname()[1]}"
        self._wait_for_collector()
        log.info("central manager up, collector relayed at %s (%.1f s)", collector,
                 time.monotonic() - t0)
        self.state = LocalCloudState(
            pid=os.getpid(), endpoint_url=f"http://127.0.0.1:{moto_port}", collector=collector,
            annex_collector=f"{netns.CM_ADDR}:9618", root=str(ROOT),
            image_id=self._default_image(),
            token_command=(f"chroot {ROOT} env CONDOR_CONFIG={CM_DIR}/etc/condor_config "
                           "condor_token_create"),
            started_at=time.time())
        log.info("default image %s (%.1f s)", self.state.image_id, time.monotonic() - t0)
        self.state.save()
        self._write_user_config()
        return self.state

    def _bake_image(self) -> None:
        """Reset the chroot's hosts file and the instances' state (nothing of the product is
        baked in: instances get the agent as on EC2, through their bootstrap)."""
        shutil.rmtree(ROOT / NODES_DIR.lstrip("/"), ignore_errors=True)
        for d in ("instances", "images"):
            shutil.rmtree(STATE_DIR / d, ignore_errors=True)
        # No DNS inside the namespaces: every name the pool uses is in the chroot's hosts file,
        # including this host's own name (tools run without their own UTS namespace use it).
        (ROOT / "etc/resolv.conf").write_text("# the local cloud has no DNS; see /etc/hosts\n")
        hosts = [f"127.0.0.1 localhost {socket.gethostname()}", f"{netns.CM_ADDR} {CM_HOSTNAME}"]
        hosts += [f"{netns.instance_address(i)} ip-{netns.instance_address(i).replace('.', '-')}"
                  for i in range(2000)]
        (ROOT / "etc/hosts").write_text("\n".join(hosts) + "\n")

    def _start_moto(self) -> int:
        """Start the moto server and, in this process, the AWS gateway in front of it
        (:mod:`~condor_annex.providers.local.gateway`: client-token idempotency and the AWS
        rules moto forgives, no fault rules); returns the **gateway's** port, the endpoint of
        the CLI (user config) and of instances (the AWS_PORT relay).

        In-process rather than ``python -m ...gateway``: its periodic rules (fleets reaching
        ValidUntil) run from :meth:`run` with the gateway's own records, and there is no
        second daemon to supervise; its work is forwarding (I/O), not CPU."""
        from condor_annex.providers.local.gateway import Gateway
        port = _free_port()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        out = open(STATE_DIR / "moto.log", "ab")
        self.moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).read()
                self.gateway = Gateway(f"127.0.0.1:{port}").start()
                self._add_image_rules()
                log.info("AWS gateway %s in front of moto on 127.0.0.1:%d", self.gateway.url,
                         port)
                return self.gateway.port
            except OSError:
                if self.moto.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError("the AWS emulator (moto server) did not start; see "
                           f"{STATE_DIR / 'moto.log'}")

    def _aws_settings(self, moto_port: int) -> AwsSettings:
        from condor_annex.providers.aws.session import make_client
        from condor_annex.providers.local.account import prepare_account
        access, secret = STATE_DIR / "access_key", STATE_DIR / "secret_key"
        for p in (access, secret):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(FAKE_KEY + "\n")
        settings = AwsSettings(region="us-east-1", endpoint_url=f"http://127.0.0.1:{moto_port}",
                               access_key_file=str(access), secret_key_file=str(secret))
        # The CLI runs as docs/aws.md's IAM user (its own key), in an account like AWS's.
        keys = prepare_account(make_client(settings, "iam"), make_client(settings, "ec2"))
        for p, value in zip((access, secret), keys):
            with open(p, "w") as f:
                f.write(value + "\n")
        return settings

    def _client(self, service: str):
        from condor_annex.providers.aws.session import make_client
        return make_client(self.settings, service)

    def _start_central_manager(self) -> None:
        host_dir = ROOT / CM_DIR.lstrip("/")
        shutil.rmtree(host_dir, ignore_errors=True)
        for sub in ("etc/config.d", "etc/tokens.d", "etc/passwords.d", "log", "spool",
                    "execute", "run", "lock", "cred_dir"):
            (host_dir / sub).mkdir(parents=True)
        (host_dir / "etc/condor_config").write_text(configs.central_manager_config(
            local_dir=CM_DIR, etc_dir=f"{CM_DIR}/etc", host=netns.CM_ADDR,
            trust_domain=TRUST_DOMAIN))
        chroot_run("chown", "-R", "condor:condor", *(f"{CM_DIR}/{s}" for s in
                   ("log", "spool", "execute", "run", "lock")))
        out = open(STATE_DIR / "central-manager.log", "ab")
        self.cm = subprocess.Popen(
            ["ip", "netns", "exec", netns.prefix() + "cm", "unshare", "--uts", "--", "sh", "-c",
             'hostname "$0" && exec "$@"', CM_HOSTNAME, "chroot", str(ROOT), "env",
             f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "condor_master", "-f"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def _wait_for_collector(self) -> None:
        # Asked with the pool's own tool, in a child process: the htcondor bindings hold the
        # GIL during a query, which would stall this process's relays (the query's own path).
        key = ROOT / CM_DIR.lstrip("/") / "etc/passwords.d/POOL"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = subprocess.run(
                ["ip", "netns", "exec", netns.prefix() + "cm", "chroot", str(ROOT), "env",
                 f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "condor_status", "-collector",
                 "-af", "Name"], capture_output=True, text=True)
            if key.exists() and p.returncode == 0 and p.stdout.strip():
                return
            if self.cm and self.cm.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError("the central manager did not start; see "
                           f"{ROOT / CM_DIR.lstrip('/') / 'log'}")

    def _add_image_rules(self) -> None:
        """Gateway rules of the local instances: CreateImage layers and GetConsoleOutput."""
        from condor_annex.providers.local.console import ConsoleOutput
        from condor_annex.providers.local.images import LocalImages
        self.images = LocalImages(self.gateway, STATE_DIR, ROOT, self._upper_of)
        self.gateway.strict_rules += [self.images, ConsoleOutput(
            self.gateway, STATE_DIR, lambda iid: iid in self.nodes)]

    def _upper_of(self, iid: str) -> Path | None:
        return ir.instances_dir(STATE_DIR) / iid / "upper"

    def _default_image(self) -> str:
        """Register the stock AMIs (and their public parameters); the debian-13 amd64 one."""
        return self.images.register_stock(self._client("ec2"))[("debian-13", "x86_64")]

    def _write_user_config(self) -> None:
        assert self.state is not None
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
        })

    # ---- the reconcile loop ---------------------------------------------------------------
    def run(self, interval_s: float = 0.1) -> None:
        """Reconcile instances and fire due schedules until :meth:`request_stop`.

        Schedules are read every second (:mod:`~condor_annex.providers.local.scheduler`) and
        their Lambda targets invoked asynchronously in worker threads
        (:mod:`~condor_annex.providers.local.lambda_async`), so a lease enforcer that waits out
        its minute does not stall this loop.  Passes are ``interval_s`` apart, or twice as long as the last pass took to list the
        instances when that is longer (a large cloud is polled less often and the emulator
        keeps CPU for the nodes)."""
        from condor_annex.providers.local.clock import Clock
        from condor_annex.providers.local.inject import FILE_NAME, Injections
        from condor_annex.providers.local.lambda_async import AsyncInvoker
        from condor_annex.providers.local.scheduler import Scheduler
        # One clock for every AWS delay here (CONDOR_ANNEX_TIME_SCALE); its sleeps end when
        # the daemon stops, so a sleeping lease enforcer never holds up the shutdown.
        clock = Clock(stop=self.stop_event)
        injections = self.injections = Injections(STATE_DIR / FILE_NAME)
        self.lambda_queue = AsyncInvoker(self._client, self._handler_clients, clock,
                                         injections).start()
        self.scheduler = Scheduler(self._client, self.lambda_queue, clock, injections)
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
            self.lambda_queue.stop()

    def request_stop(self, *_: object) -> None:
        """Signal handler: leave :meth:`run` at the next tick."""
        self.stop_event.set()

    def reconcile(self) -> float:
        """One pass: boot nodes for new instances (in parallel), stop nodes of ended ones, and
        terminate instances whose node powered off.

        Returns:
            seconds spent listing the instances (DescribeInstances), for pacing.
        """
        started = time.monotonic()
        ec2 = self._client("ec2")
        live: dict[str, dict] = {}
        for page in ec2.get_paginator("describe_instances").paginate(Filters=[{
                "Name": "instance-state-name", "Values": ["pending", "running"]}]):
            for res in page["Reservations"]:
                # moto attaches the instance profile to the first instance of a launch only
                # (tests/aws document the gap); EC2 gives every instance of the request the
                # profile, so the local cloud applies the reservation's profile to each.
                profile = next((i["IamInstanceProfile"] for i in res["Instances"]
                                if i.get("IamInstanceProfile")), None)
                for inst in res["Instances"]:
                    if profile and not inst.get("IamInstanceProfile"):
                        inst = {**inst, "IamInstanceProfile": profile}
                    live[inst["InstanceId"]] = inst
        if any(i.get("InstanceLifecycle") == "spot" and not i.get("IamInstanceProfile")
               and iid not in self.nodes for iid, i in live.items()):
            live = self._with_fleet_launch_settings(ec2, live)
        listed_s = time.monotonic() - started
        fresh: list[Node] = []
        for iid, inst in live.items():
            node = self.nodes.get(iid)
            if node is None:
                if not inst.get("IamInstanceProfile") and _age_s(inst) < PROFILE_WAIT_S:
                    continue   # EC2 attaches the profile at launch; moto may not have yet
                fresh.append(self._register(inst))
                continue
            self._refresh_metadata(node, inst)
            if node.proc is not None and node.proc.poll() is not None \
                    and node.stop_sent_at is None:
                log.info("%s powered off (agent exit %s)", iid, node.proc.returncode)
                self._power_off(ec2, iid)
        if fresh:
            with concurrent.futures.ThreadPoolExecutor(BOOT_WORKERS) as pool:
                margin = None
                if self.injections is not None and self.injections.backstop_off():
                    from condor_annex.providers.local.inject import BACKSTOP_OFF_MARGIN_S
                    margin = BACKSTOP_OFF_MARGIN_S
                list(pool.map(lambda n: n.boot(self.images.layers_for(n.metadata.image_id),
                                               lease_margin_s=margin), fresh))   # raises
        for iid, node in list(self.nodes.items()):
            if iid not in live:
                node.stop()
                if node.reap():
                    self._forget(node)
        return listed_s

    def _with_fleet_launch_settings(self, ec2, live: dict[str, dict]) -> dict[str, dict]:
        """Give fleet members what their fleet asked for and moto leaves out.

        moto launches Spot Fleet and EC2 Fleet members without the launch specification's (or
        launch template's) instance profile, and with shutdown behaviour *stop* (tests/aws/
        test_fleet.py documents both gaps).  On EC2 every member has them, so the local cloud
        reads each fleet back and applies its profile and shutdown behaviour to its members:
        Spot Fleet members terminate on shutdown (one-time Spot), EC2 Fleet members do what
        the template says.
        """
        settings: dict[str, tuple[dict | None, str]] = {}
        templates: dict[tuple[str, str], dict] = {}

        def template_data(lt: dict) -> dict:
            key = (lt.get("LaunchTemplateId", ""), str(lt.get("Version") or "$Latest"))
            if key not in templates:
                try:
                    ref = {"LaunchTemplateId": key[0]} if key[0] else \
                        {"LaunchTemplateName": lt.get("LaunchTemplateName", "")}
                    templates[key] = ec2.describe_launch_template_versions(
                        **ref, Versions=[key[1]])["LaunchTemplateVersions"][0][
                        "LaunchTemplateData"]
                except Exception:  # noqa: BLE001 - the template was deleted
                    templates[key] = {}
            return templates[key]

        for page in ec2.get_paginator("describe_spot_fleet_requests").paginate():
            for sfr in page.get("SpotFleetRequestConfigs", []):
                config = sfr.get("SpotFleetRequestConfig", {})
                specs = config.get("LaunchSpecifications", [])
                lt_configs = config.get("LaunchTemplateConfigs", [])
                members = ec2.describe_spot_fleet_instances(
                    SpotFleetRequestId=sfr["SpotFleetRequestId"]).get("ActiveInstances", [])
                for member in members:
                    if lt_configs:   # the launch template carries the profile
                        data = template_data(lt_configs[0].get("LaunchTemplateSpecification",
                                                               {}))
                        settings[member["InstanceId"]] = (data.get("IamInstanceProfile"),
                                                          "terminate")
                        continue
                    spec = next((s for s in specs if s.get("InstanceType")
                                 == member.get("InstanceType")), specs[0] if specs else {})
                    settings[member["InstanceId"]] = (spec.get("IamInstanceProfile"),
                                                      "terminate")
        for page in ec2.get_paginator("describe_fleets").paginate():
            for fleet in page.get("Fleets", []):
                groups = [(g.get("LaunchTemplateAndOverrides", {}).get(
                    "LaunchTemplateSpecification", {}), g.get("InstanceIds", []))
                    for g in fleet.get("Instances", [])]
                if fleet.get("Type") != "instant" and fleet.get("LaunchTemplateConfigs"):
                    # Only instant fleets list their instances in DescribeFleets (API_FleetData);
                    # request and maintain fleets answer DescribeFleetInstances.
                    active = ec2.describe_fleet_instances(FleetId=fleet["FleetId"]).get(
                        "ActiveInstances", [])
                    groups.append((fleet["LaunchTemplateConfigs"][0].get(
                        "LaunchTemplateSpecification", {}),
                        [a["InstanceId"] for a in active]))
                for lt, ids in groups:
                    data = template_data(lt)
                    for iid in ids:
                        settings[iid] = (data.get("IamInstanceProfile"),
                                         data.get("InstanceInitiatedShutdownBehavior",
                                                  "terminate"))
        out = dict(live)
        for iid, inst in live.items():
            if iid in settings and not inst.get("IamInstanceProfile"):
                profile, behaviour = settings[iid]
                self._shutdown_behaviour[iid] = behaviour
                if profile:
                    out[iid] = {**inst, "IamInstanceProfile": profile}
        return out

    def _register(self, inst: dict) -> Node:
        """A node for a new instance: its address, host name and metadata (booted by the
        caller)."""
        from condor_annex.providers.local.imds import InstanceMetadata
        iid = inst["InstanceId"]
        node = Node(iid, self.next_index)
        self.next_index += 1
        profile_arn = (inst.get("IamInstanceProfile") or {}).get("Arn", "")
        self.images.launched(iid, inst.get("ImageId", ""))
        node.metadata = InstanceMetadata(
            instance_id=iid, region=self.settings.region,
            availability_zone=inst.get("Placement", {}).get("AvailabilityZone", "us-east-1a"),
            private_ip=node.address, public_ip=node.address,
            tags={t["Key"]: t["Value"] for t in inst.get("Tags", [])},
            instance_profile_arn=profile_arn, role_name=(role := self._role_of(profile_arn)),
            credentials=self._credentials_of(role),
            user_data=ir.user_data(self._client("ec2"), iid), image_id=inst.get("ImageId", ""), instance_type=inst.get("InstanceType", "m4.large"))
        self.nodes[iid] = node
        self.by_address[node.address] = node
        log.info("booting %s as %s (%s)", iid, node.hostname, node.address)
        return node

    def _refresh_metadata(self, node: Node, inst: dict) -> None:
        """Keep a running node's metadata in step with EC2, as IMDS does: instance tags follow
        CreateTags/DeleteTags (``off`` tags instances), and ``iam/`` follows the instance
        profile.  The profile matters at boot: a DescribeInstances that overlaps moto's
        RunInstances can list instances before moto attached the profile (a bulk boot then
        left some nodes without role credentials until their agent gave up)."""
        md = node.metadata
        if md is None:
            return
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        # Never back to none: moto lists fleet members without the profile their fleet gave
        # them (filled in only when they boot), and condor_annex never disassociates one.
        profile_arn = (inst.get("IamInstanceProfile") or {}).get("Arn", "") \
            or md.instance_profile_arn
        if tags != md.tags or profile_arn != md.instance_profile_arn \
                or (profile_arn and not md.role_name):
            if profile_arn != md.instance_profile_arn:
                log.info("%s: instance profile now %r", node.instance_id, profile_arn)
            role = self._role_of(profile_arn)
            node.metadata = dataclasses.replace(md, tags=tags, instance_profile_arn=profile_arn,
                                                role_name=role,
                                                credentials=self._credentials_of(role))

    def _credentials_of(self, role_name: str) -> tuple[str, str, str]:
        """The credentials IMDS hands an instance of role ``role_name``: an access key of that
        role alone (:func:`role_access_key`), registered with the gateway so that its strict
        IAM rule (:mod:`~condor_annex.providers.local.strict_iam`) evaluates what the role may
        read, as AWS does for the role's session.  No role: the old shared fake key."""
        if not role_name:
            return (FAKE_KEY, FAKE_KEY, "local-session-token")
        key = role_access_key(role_name)
        if self.gateway is not None:
            self.gateway.register_role_key(key, role_name)
        return (key, FAKE_KEY, "local-session-token-" + role_name)

    def _role_of(self, profile_arn: str) -> str:
        if not profile_arn:
            return ""
        if profile_arn not in self._profiles:
            try:
                prof = self._client("iam").get_instance_profile(
                    InstanceProfileName=profile_arn.rsplit("/", 1)[-1])["InstanceProfile"]
                self._profiles[profile_arn] = (prof.get("Roles") or [{}])[0].get("RoleName", "")
            except Exception:  # noqa: BLE001 - an instance without a usable role still boots
                log.warning("instance profile %s: no role yet", profile_arn, exc_info=True)
                return ""   # not cached: the next reconcile pass asks again
        return self._profiles[profile_arn]

    def _power_off(self, ec2, iid: str) -> None:
        """The node's OS halted: apply the instance's shutdown behaviour."""
        if iid in self._shutdown_behaviour:   # a fleet member (moto does not know it)
            behaviour = self._shutdown_behaviour[iid]
            if behaviour == "stop":
                ec2.stop_instances(InstanceIds=[iid])
            else:
                ec2.terminate_instances(InstanceIds=[iid])
            return
        try:
            attr = ec2.describe_instance_attribute(
                InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
            behaviour = attr["InstanceInitiatedShutdownBehavior"]["Value"]
        except Exception:  # noqa: BLE001
            behaviour = "terminate"
        if behaviour == "stop":
            ec2.stop_instances(InstanceIds=[iid])
        else:
            ec2.terminate_instances(InstanceIds=[iid])

    def _forget(self, node: Node) -> None:
        netns.delete_host(node.ns_name)
        if node.root and ir.state(self._client("ec2"), node.instance_id) not in ("stopping",
                                                                                  "stopped"):
            node.root.remove()   # a stopped instance keeps its root volume (CreateImage, start)
        self.nodes.pop(node.instance_id, None)
        self.by_address.pop(node.address, None)
        self._shutdown_behaviour.pop(node.instance_id, None)
        self._instance_ended(node.instance_id)

    def _instance_ended(self, instance_id: str) -> None:
        """Deliver an "EC2 Instance State-change Notification" (terminated) to the targets of
        the EventBridge rules that match it (setup's rule: the lease function), as EventBridge
        does on AWS (moto never emits these events).  EventBridge invokes Lambda
        asynchronously: the event is queued (:class:`~condor_annex.providers.local.
        lambda_async.AsyncInvoker`, retries and on-failure destination included), never run
        in this loop."""
        queue = getattr(self, "lambda_queue", None)
        if queue is None or self.stop_event.is_set():   # not running its loop (shutdown)
            return
        try:
            targets = self._state_change_targets()
        except Exception:  # noqa: BLE001 - the lease and the sweep still end the annex
            log.exception("listing the EventBridge rules for %s failed", instance_id)
            return
        region = self.settings.region
        event = {
            "version": "0", "id": str(uuid.uuid4()),
            "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
            "account": "123456789012",   # moto's default account
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [f"arn:aws:ec2:{region}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "state": "terminated"},
        }
        for rule, arn in targets:
            queue.invoke(arn, event, source=f"rule {rule} ({instance_id} terminated)")

    def _state_change_targets(self) -> list[tuple[str, str]]:
        """``(rule name, Lambda ARN)`` of every enabled EventBridge rule whose pattern matches an
        EC2 "terminated" state-change event (ListRules, ListTargetsByRule)."""
        events = self._client("events")
        out = []
        for page in events.get_paginator("list_rules").paginate():
            for rule in page.get("Rules", []):
                if rule.get("State") != "ENABLED" or not rule.get("EventPattern"):
                    continue
                try:
                    pattern = json.loads(rule["EventPattern"])
                except ValueError:
                    continue
                states = (pattern.get("detail") or {}).get("state")
                if "aws.ec2" not in (pattern.get("source") or []) or \
                        "EC2 Instance State-change Notification" not in \
                        (pattern.get("detail-type") or []) or \
                        (states is not None and "terminated" not in states):
                    continue
                for t in events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
                    if ":lambda:" in t.get("Arn", "") and ":function:" in t["Arn"]:
                        out.append((rule["Name"], t["Arn"]))
        return out

    def _handler_clients(self) -> dict:
        """The lease handler's clients, its EC2 client wrapped by :class:`MotoFleetEc2`
        (called in the Lambda worker threads: boto3 clients are made per call, each thread's
        from its own session)."""
        clients = {s: self._client(s) for s in ("ec2", "s3", "scheduler", "iam")}
        clients["ec2"] = MotoFleetEc2(clients["ec2"])
        return clients

    def _metadata_for(self, address: str):
        node = self.by_address.get(address)
        return node.metadata if node else None

    def fire_due_leases(self) -> list:
        """Fire the schedules that are due now, as EventBridge Scheduler would (moto never
        fires one): one-time ``at()`` schedules at a random second of their minute (or its
        first second with ``local inject schedule-early``), ``rate()`` schedules every period
        of the local cloud's clock; their Lambda targets are queued for asynchronous
        invocation.  See :mod:`condor_annex.providers.local.scheduler`.

        Returns:
            the :class:`~condor_annex.providers.local.scheduler.Fired` occurrences.
        """
        scheduler = getattr(self, "scheduler", None)
        return scheduler.tick() if scheduler is not None else []

    # ---- tear-down ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop every node, the central manager, the relays, IMDS and the emulator; delete the
        namespaces, the state file and the user-config block."""
        t0 = time.monotonic()
        log.info("shutting down: %d node(s)", len(self.nodes))
        for node in self.nodes.values():
            node.stop()
        deadline = time.monotonic() + 25
        while self.nodes and time.monotonic() < deadline:
            for node in list(self.nodes.values()):
                if node.reap(grace_s=15):
                    self._forget(node)
            time.sleep(0.2)
        for proc in (self.cm,):
            if proc and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
        log.info("nodes and central manager stopped (%.1f s)", time.monotonic() - t0)
        for relay in self.relays:
            relay.stop()
        if self.imds:
            self.imds.stop()
        if self.moto and self.moto.poll() is None:
            _signal_group(self.moto, signal.SIGTERM)
            try:
                self.moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(self.moto, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", f"CONDOR_CONFIG={NODES_DIR}"], check=False)
        netns.delete_all()
        for d in ("instances", "images"):   # roots, consoles and CreateImage layers
            shutil.rmtree(STATE_DIR / d, ignore_errors=True)
        log.info("shut down (%.1f s)", time.monotonic() - t0)
        user_config.remove_block(CONFIG_BLOCK)
        for f in ("state.json", "access_key", "secret_key"):
            (STATE_DIR / f).unlink(missing_ok=True)


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


def _free_port() -> int:
    s = _loopback_listener()
    port = s.getsockname()[1]
    s.close()
    return port


def _loopback_listener() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


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
