"""Row 3: HTCondor's own ``condor_annex`` (23.9.6, ``/usr/bin/condor_annex`` in the trixie chroot)
side by side with ours, against one moto endpoint.

What the original needs against an emulator (local-cloud.md, "side-by-side reference"), and how
it is provided here:

1. no region (``ANNEX_DEFAULT_AWS_REGION =``), so its ``ANNEX_DEFAULT_*_URL`` knobs are used;
2. AWS-looking host names (``ec2.us-east-1.amazonaws.com``, ``events…``, ``lambda…``, ``s3…``,
   ``<bucket>.s3…``) mapped to 127.0.0.1 in the chroot's ``/etc/hosts`` (restored afterwards),
   with the proxy's port, so ``ec2_gahp`` derives the right SigV4 region and service;
3. a proxy in front of moto that fixes Lambda Invoke's content type (:mod:`benchmarks.proxy`);
   it also counts both tools' requests;
4. moto's Lambda in simple mode (the lease function re-created after the switch, which hides
   functions made before it or by CloudFormation), with the answer its connectivity check expects queued before
   each create: ``{"success": "1", "result": "<collector instance id>"}``.  The id is learnt from
   a warm-up run answered with a wrong id (the original prints the id it expected).

Its create also asks a real collector for that instance id, so a bare collector (``condor_master``
with ``DAEMON_LIST = MASTER COLLECTOR``) runs in the chroot on loopback for the section; both
tools use it (COLLECTOR_HOST), and ours mints its token with ``condor_token_create`` against it.
The original runs as the chroot's ordinary user ``annexuser`` with its own ``CONDOR_CONFIG`` and
user config in a bench directory; its wall time includes ``chroot`` + ``runuser`` (measured and
reported as ``wrapper_s``).  Setup resources come from our ``setup`` (the original's templates
live in a public bucket that cannot be reached) and are given to it as ``ANNEX_DEFAULT_*`` knobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import env
from benchmarks.moto_rows import CLI
from benchmarks.proxy import CountingProxy
from benchmarks.report import Row

BENCH_DIR = "/var/lib/condor-annex/bench-original"   # inside the chroot
USER = "annexuser"
_EXPECTED_RE = re.compile(r"wrong collector \(\S+ vs (\S+)\)")


class Original:
    """The original tool's environment in the chroot (see the module docstring)."""

    def __init__(self, root: Path, endpoint: str, proxy: CountingProxy, home: Path) -> None:
        self.root, self.endpoint, self.proxy, self.home = root, endpoint, proxy, home
        self.host_dir = root / BENCH_DIR.lstrip("/")
        self.collector_port = env.free_port()
        self.collector: subprocess.Popen | None = None
        self.collector_id = ""
        self._hosts = ""
        self.uid = int(subprocess.run(["chroot", str(root), "id", "-u", USER], check=True,
                                      capture_output=True, text=True).stdout)

    # -- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        """Files, the collector, /etc/hosts (saved for :meth:`stop`)."""
        shutil.rmtree(self.host_dir, ignore_errors=True)
        self.host_dir.mkdir(parents=True)
        os.chown(self.host_dir, self.uid, self.uid)
        for name in ("access", "secret", "pool_password"):
            self._private(name, "testing\n")
        self._start_collector()
        self._hosts = (self.root / "etc/hosts").read_text()

    def _private(self, name: str, text: str) -> None:
        p = self.host_dir / name
        p.write_text(text)
        os.chown(p, self.uid, self.uid)
        p.chmod(0o600)

    @property
    def pool_dir(self) -> str:
        return f"{BENCH_DIR}/pool"

    @property
    def token_command(self) -> str:
        return (f"chroot {self.root} env CONDOR_CONFIG={self.pool_dir}/etc/condor_config "
                "condor_token_create")

    def _start_collector(self) -> None:
        from condor_annex.pool import configs

        pd = self.pool_dir
        host_pd = self.root / pd.lstrip("/")
        for sub in ("etc/config.d", "etc/tokens.d", "etc/passwords.d", "log", "spool",
                    "execute", "run", "lock", "cred_dir"):
            (host_pd / sub).mkdir(parents=True, exist_ok=True)
        (host_pd / "etc/condor_config").write_text(configs.base_paths(pd, f"{pd}/etc") + f"""\
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:{self.collector_port}
NETWORK_INTERFACE = 127.0.0.1
DAEMON_LIST = MASTER COLLECTOR
USE_SHARED_PORT = False
TRUST_DOMAIN = bench.invalid
ALLOW_READ = *
ALLOW_WRITE = *
ALLOW_DAEMON = *
ALLOW_ADMINISTRATOR = *
SEC_DEFAULT_AUTHENTICATION = OPTIONAL
""")
        subprocess.run(["chroot", str(self.root), "chown", "-R", "condor:condor",
                        *(f"{pd}/{s}" for s in ("log", "spool", "execute", "run", "lock"))],
                       check=True)
        with open(host_pd / "master.out", "ab") as out:
            self.collector = subprocess.Popen(
                ["chroot", str(self.root), "env", f"CONDOR_CONFIG={pd}/etc/condor_config",
                 "condor_master", "-f"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while not (host_pd / "etc/passwords.d/POOL").exists():   # signing key: collector up
            if time.monotonic() > deadline or self.collector.poll() is not None:
                raise RuntimeError("the bench collector did not start; see "
                                   f"{host_pd / 'log'}")
            time.sleep(0.2)
        time.sleep(1)

    def configure(self, outputs: Any) -> None:
        """(Re)write the original's config for ``outputs`` (after a setup) and map the AWS
        host names, the bucket's included, to loopback."""
        port, d = self.proxy.port, BENCH_DIR
        (self.host_dir / "condor_config").write_text(
            f"include : /etc/condor/condor_config\nUSER_CONFIG_FILE = {d}/user_config\n")
        url = "http://{}.us-east-1.amazonaws.com:" + str(port)
        self._private("user_config", f"""\
COLLECTOR_HOST = 127.0.0.1:{self.collector_port}
ANNEX_DEFAULT_AWS_REGION =
ANNEX_DEFAULT_EC2_URL = {url.format("ec2")}
ANNEX_DEFAULT_CWE_URL = {url.format("events")}
ANNEX_DEFAULT_LAMBDA_URL = {url.format("lambda")}
ANNEX_DEFAULT_S3_URL = {url.format("s3")}
ANNEX_DEFAULT_ACCESS_KEY_FILE = {d}/access
ANNEX_DEFAULT_SECRET_KEY_FILE = {d}/secret
SEC_PASSWORD_FILE = {d}/pool_password
ANNEX_DEFAULT_S3_BUCKET = {outputs.bucket}
ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN = {outputs.lease_function_arn}
ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN = {outputs.lease_function_arn}
ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN = {outputs.lease_function_arn}
ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN = {outputs.instance_profile_arn}
ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS = {outputs.security_group_id}
ANNEX_DEFAULT_ODI_KEY_NAME = {outputs.key_name}
ANNEX_DEFAULT_ODI_IMAGE_ID = {env.MOTO_AMI}
""")
        names = ("ec2", "events", "lambda", "s3", f"{outputs.bucket}.s3")
        (self.root / "etc/hosts").write_text(
            self._hosts + "127.0.0.1 " + " ".join(f"{n}.us-east-1.amazonaws.com"
                                                  for n in names) + "\n")

    def stop(self) -> None:
        """Stop the collector, restore /etc/hosts, delete the bench directory."""
        if self.collector and self.collector.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.collector.pid, signal.SIGTERM)
            try:
                self.collector.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.collector.pid, signal.SIGKILL)
                self.collector.wait()
        if self._hosts:
            (self.root / "etc/hosts").write_text(self._hosts)
        shutil.rmtree(self.host_dir, ignore_errors=True)

    # -- running it -----------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        return ["chroot", str(self.root), "runuser", "-u", USER, "--", "env", "-i",
                "PATH=/usr/bin:/bin:/usr/sbin:/sbin", f"HOME=/home/{USER}", "LANG=C.UTF-8",
                f"CONDOR_CONFIG={BENCH_DIR}/condor_config", *args]

    def run(self, *args: str, answer: str | None = None) -> tuple[float, str, Counter]:
        """Run ``condor_annex ARGS``; ``answer`` is queued as the connectivity Lambda's reply.

        Returns:
            (wall seconds, its stdout + stderr, requests it made by operation).
        """
        if answer is not None:
            env.moto_post(self.endpoint, "/moto-api/static/lambda-simple/response",
                          json.dumps({"results": [answer]}).encode())
        self.proxy.reset()
        t0 = time.perf_counter()
        p = subprocess.run(self.command("condor_annex", *args), capture_output=True, text=True,
                           timeout=600)
        wall = time.perf_counter() - t0
        return wall, (p.stdout + p.stderr).strip(), self.proxy.reset()

    def completed(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``condor_annex ARGS`` as :data:`USER` (no proxy reset, no Lambda answer queued).

        Returns:
            the finished process: stdout, stderr (text) and exit status apart.
        """
        return subprocess.run(self.command("condor_annex", *args), capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)

    def tool_wrapper(self, tool: str, directory: Path) -> Path:
        """Write ``directory/tool``, a script running the chroot's ``tool`` as the original
        runs it (its user, its config, standard input passed on), so our CLI on the host can
        run HTCondor's ``condor_status`` as the original does; returns its path."""
        import shlex

        path = directory / tool
        path.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in
                                                      self.command(tool)) + ' "$@"\n')
        path.chmod(0o755)
        return path

    def advertise(self, command: str, ads: str) -> None:
        """Send ``ads`` (ClassAds in text form, separated by blank lines) to the bench
        collector with the chroot's ``condor_advertise -multiple COMMAND``.

        Raises:
            RuntimeError: condor_advertise failed.
        """
        rel = f"{self.pool_dir}/ads-{os.getpid()}"
        host = self.root / rel.lstrip("/")
        host.write_text(ads)
        try:
            p = subprocess.run(["chroot", str(self.root), "env",
                                f"CONDOR_CONFIG={self.pool_dir}/etc/condor_config",
                                "condor_advertise", "-multiple", command, rel],
                               capture_output=True, text=True, timeout=60)
        finally:
            host.unlink(missing_ok=True)
        if p.returncode:
            raise RuntimeError(f"condor_advertise {command}: {p.stdout}{p.stderr}")

    def learn_collector_id(self) -> str:
        """Warm-up create answered with a wrong id; the original names the one it expected."""
        _, out, _ = self.run("-annex-name", "warmup", "-count", "1", "-yes",
                             answer=json.dumps({"success": "1", "result": "wrong-id"}))
        m = _EXPECTED_RE.search(out)
        if not m:
            raise RuntimeError(f"original condor_annex (warm-up): {out[-400:]}")
        self.collector_id = m.group(1)
        return self.collector_id

    def good_answer(self) -> str:
        return json.dumps({"success": "1", "result": self.collector_id})

    def wrapper_seconds(self, runs: int = 5) -> float:
        """Median cost of ``chroot`` + ``runuser`` + ``env`` alone (``true``)."""
        xs = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(self.command("true"), check=True)
            xs.append(time.perf_counter() - t0)
        return statistics.median(xs)


def ours_completed(*args: str, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """Our console script with classic ``args``; ``path_first`` is put before ``PATH`` (where
    :meth:`Original.tool_wrapper` wrote HTCondor's tools).

    Returns:
        the finished process: stdout, stderr (text) and exit status apart.
    """
    child = env.child_env()
    if path_first is not None:
        child["PATH"] = f"{path_first}{os.pathsep}{child.get('PATH', '')}"
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=600,
                          env=child, stdin=subprocess.DEVNULL)


def run_ours(proxy: CountingProxy, *args: str) -> tuple[float, str, Counter, int]:
    """Our console script with the same classic arguments; (wall, output, requests, status)."""
    proxy.reset()
    t0 = time.perf_counter()
    p = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=600,
                       env=env.child_env(), stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return wall, (p.stdout + p.stderr).strip(), proxy.reset(), p.returncode


@contextlib.contextmanager
def side_by_side(log: Callable[[str], None]) -> Iterator[tuple[Original, CountingProxy, str]]:
    """Lock, chroot, moto + proxy, our config and setup, the original's environment."""
    from condor_annex.providers.local.cloud import ensure_root, exclusive_session

    log("waiting for the local-cloud lock (the original runs in the shared chroot)")
    with env.isolated_home() as home, exclusive_session():
        root = ensure_root()
        with env.moto_server(home) as endpoint:
            upstream = endpoint.split("//", 1)[1]
            proxy = CountingProxy(upstream).start()
            orig = Original(root, endpoint, proxy, home)
            try:
                orig.start()
                yield orig, proxy, f"http://127.0.0.1:{proxy.port}"
            finally:
                orig.stop()
                proxy.stop()


def fresh_account(orig: Original, proxy_url: str, home: Path) -> Any:
    """Reset moto; our config (through the proxy, the bench collector, the real token
    command); setup; the original's config for the new setup outputs."""
    from condor_annex import config
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    env.reset_moto(orig.endpoint)
    env.write_moto_config(home, proxy_url, collector=f"127.0.0.1:{orig.collector_port}")
    config.write_block("bench-original", {
        "COLLECTOR_HOST": f"127.0.0.1:{orig.collector_port}",
        "ANNEX_TOKEN_COMMAND": orig.token_command,
        "ANNEX_TRUST_DOMAIN": "bench.invalid"})
    outputs = svc.setup_cloud(Context.load())
    simple_lambda(orig.endpoint, outputs)
    orig.configure(outputs)
    return outputs


def simple_lambda(endpoint: str, outputs: Any) -> None:
    """Put moto's Lambda in simple mode (Invoke answers from a queue, no Docker) and re-create
    the lease function there: the simple backend does not see functions made before the
    switch, nor those CloudFormation makes."""
    import io
    import zipfile

    from condor_annex.providers.aws.session import make_client
    from condor_annex.service.context import Context

    env.moto_post(endpoint, "/moto-api/config",
                  json.dumps({"lambda": {"use_docker": False}}).encode())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return {}\n")
    make_client(Context.load().aws, "lambda").create_function(
        FunctionName=outputs.lease_function_arn.rsplit(":", 1)[-1], Runtime="python3.12",
        Role=outputs.scheduler_role_arn, Handler="index.handler",
        Code={"ZipFile": buf.getvalue()})


def _started(out: str, counts: Counter) -> bool:
    return counts.get("ec2.RunInstances", 0) >= 1 and "fail" not in out.lower()


def rows(plan: dict, log: Callable[[str], None]) -> list[Row]:
    """Row 3: create -count N -yes, and -status over M instances, both tools, same endpoint."""
    n_create, n_status = plan["original_create_n"], plan["original_status_n"]
    runs = plan.get("original_runs", 3)
    out_rows: list[Row] = []
    with side_by_side(log) as (orig, proxy, proxy_url):
        home = Path(os.environ["CONDOR_ANNEX_USER_CONFIG"]).parent
        fresh_account(orig, proxy_url, home)
        wrapper_s = orig.wrapper_seconds()
        try:
            orig.learn_collector_id()
            log(f"  original: collector instance id {orig.collector_id}")
        except RuntimeError as e:
            err = str(e)
            return [Row(key="original.create", what=f"side by side: create -count {n_create} -yes",
                        unit="s", error=err),
                    Row(key="original.status",
                        what=f"side by side: -status over {n_status} instances", unit="s",
                        error=err)]

        # -status over n_status instances: made by the original itself, so both tools see
        # instances as the original makes them.
        w, out, calls = orig.run("-annex-name", "statusbase", "-count", str(n_status), "-yes",
                                 answer=orig.good_answer())
        log(f"  original create -count {n_status}: {w:.1f} s, {sum(calls.values())} requests")
        base_ok = _started(out, calls)
        theirs, ours, details = [], [], []
        error = "" if base_ok else f"original create -count {n_status} failed: {out[-300:]}"
        for r in range(runs if base_ok else 0):
            tw, tout, tcalls = orig.run("-status")
            ow, oout, ocalls, code = run_ours(proxy, "-status")
            if code != 0:
                error = f"ours -status exited {code}: {oout[-300:]}"
                break
            if str(n_status) not in tout or str(n_status) not in oout:
                error = (f"a -status did not show the {n_status} instances: original "
                         f"{tout[-200:]!r}; ours {oout[-200:]!r}")
                break
            _record(theirs, ours, details, (tw, tout, tcalls), (ow, oout, ocalls))
            log(f"  -status run {r + 1}/{runs}: {_summary(tw, tcalls, ow, ocalls)}")
        out_rows.append(_row("original.status", f"side by side: -status over {n_status} "
                             "instances", ours, theirs, error, details, wrapper_s))

        theirs, ours, details, error = [], [], [], ""
        for r in range(runs):
            tw, tout, tcalls = orig.run("-annex-name", f"orig-c{r}", "-count", str(n_create),
                                        "-yes", answer=orig.good_answer())
            if not _started(tout, tcalls):
                error = f"original: {tout[-300:]}"
                break
            ow, oout, ocalls, code = run_ours(proxy, "-annex-name", f"ours-c{r}", "-count",
                                              str(n_create), "-yes")
            if code != 0:
                error = f"ours exited {code}: {oout[-300:]}"
                break
            _record(theirs, ours, details, (tw, tout, tcalls), (ow, oout, ocalls))
            log(f"  create -count {n_create} run {r + 1}/{runs}: "
                f"{_summary(tw, tcalls, ow, ocalls)}")
        out_rows.insert(0, _row("original.create", f"side by side: create -count {n_create} "
                                "-yes", ours, theirs, error, details, wrapper_s))
    return out_rows


def _record(theirs: list[float], ours: list[float], details: list[dict],
            original: tuple, our: tuple) -> None:
    """Append one side-by-side run: each side is (wall seconds, output, request counts)."""
    theirs.append(original[0])
    ours.append(our[0])
    details.append({side: {"wall_s": wall, "calls": dict(calls), "output_tail": out[-400:]}
                    for side, (wall, out, calls) in (("original", original), ("ours", our))})


def _summary(tw: float, tcalls: dict, ow: float, ocalls: dict) -> str:
    return (f"original {tw:.2f} s ({sum(tcalls.values())} requests), ours {ow:.2f} s "
            f"({sum(ocalls.values())} requests)")


def _row(key: str, what: str, ours: list[float], theirs: list[float], error: str,
         details: list[dict], wrapper_s: float) -> Row:
    row = Row(key=key, what=what, unit="s", samples=ours,
              reference=statistics.median(theirs) if theirs else None,
              reference_samples=theirs, target="≤ 1.0× original", error=error,
              extra={"runs": details, "wrapper_s": wrapper_s})
    if details:
        o = statistics.median(sum(d["ours"]["calls"].values()) for d in details)
        t = statistics.median(sum(d["original"]["calls"].values()) for d in details)
        row.extra["requests_ours"], row.extra["requests_original"] = o, t
        row.notes = f"requests: ours {o:.0f}, original {t:.0f}"
    if error and not ours:
        row.notes = "the original could not complete this step against the emulator"
    row.target_ok = row.ratio is not None and row.ratio <= 1.0
    return row
