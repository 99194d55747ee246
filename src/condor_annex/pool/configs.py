"""HTCondor configuration text: the per-annex bundle, and the local cloud's node images.

Follows the HTCondor manual's *Configuration Macros* (STARTD_NOCLAIM_SHUTDOWN,
DAEMON_SHUTDOWN_FAST, STARTD_ATTRS, TRUST_DOMAIN) and the original tool's
``00ec2-dynamic.config`` (reference §3), with a per-annex IDTOKEN instead of a pool password.
"""

from __future__ import annotations

import io
import tarfile
import time


def _quote(value: str) -> str:
    """A ClassAd string literal for ``value`` (names are validated, but quote defensively)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def annex_config(*, annex_name: str, collector: str, trust_domain: str, idle_seconds: int,
                 owners: tuple[str, ...] = (), uid_domain: str = "") -> str:
    """Render ``config.d/50-annex.config`` for one annex.

    Args:
        annex_name: validated annex name; advertised as ``AnnexName`` with ``IsAnnex = True``.
        collector: ``host[:port]`` of the collector the instances report to.
        trust_domain: the pool's TRUST_DOMAIN (the token's issuer must match it).
        idle_seconds: STARTD_NOCLAIM_SHUTDOWN, seconds; the master then exits and the instance
            powers off (shutdown behaviour *terminate*).
        owners: users whose jobs may start here; empty means any user of the pool.
        uid_domain: the pool's UID_DOMAIN / FILESYSTEM_DOMAIN (default: trust_domain).

    Returns:
        the config file's text.
    """
    uid_domain = uid_domain or trust_domain
    host = collector.rsplit(":", 1)[0] if collector.count(":") == 1 else collector
    start = "TRUE"
    if owners:
        start = f'stringListMember(TARGET.Owner, {_quote(",".join(owners))})'
    return f"""\
# condor-annex: configuration for annex {annex_name} (written by condor_annex create)
CONDOR_HOST = {host}
COLLECTOR_HOST = {collector}
UID_DOMAIN = {uid_domain}
FILESYSTEM_DOMAIN = {uid_domain}
TRUST_DOMAIN = {trust_domain}
DAEMON_LIST = MASTER STARTD
SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
SEC_DEFAULT_INTEGRITY = REQUIRED
SEC_DEFAULT_ENCRYPTION = REQUIRED
ALLOW_ADMINISTRATOR = condor@{trust_domain}/*, root@{trust_domain}/*
AnnexName = {_quote(annex_name)}
IsAnnex = True
STARTD_ATTRS = $(STARTD_ATTRS) AnnexName IsAnnex
MASTER_ATTRS = $(MASTER_ATTRS) AnnexName IsAnnex
START = {start}
STARTER_ALLOW_RUNAS_OWNER = False
STARTD_NOCLAIM_SHUTDOWN = {int(idle_seconds)}
MASTER.DAEMON_SHUTDOWN_FAST = (STARTD_StartTime == 0) && ((CurrentTime - DaemonStartTime) > 10)
UPDATE_INTERVAL = 15
MASTER_UPDATE_INTERVAL = 60
"""


def bundle_tarball(files: dict[str, tuple[bytes, int]]) -> bytes:
    """Pack ``{relative path: (content, mode)}`` into a tar.gz (the config bundle).

    Paths are relative to HTCondor's config dir (``config.d/...``, ``tokens.d/...``).  Built in
    memory: the bundle holds a credential, so it never touches the disk or the current directory
    (the original left it in cwd after a failed upload; reference §10).
    """
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, now
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def annex_bundle(*, annex_name: str, collector: str, trust_domain: str, idle_seconds: int,
                 token: str, owners: tuple[str, ...] = ()) -> bytes:
    """The per-annex config bundle: ``config.d/50-annex.config`` + ``tokens.d/annex.token``.

    Args:
        token: the annex's IDTOKEN (a JWT); stored mode 600.

    Returns:
        tar.gz bytes, ready for :meth:`Provider.put_bundle`.
    """
    cfg = annex_config(annex_name=annex_name, collector=collector, trust_domain=trust_domain,
                       idle_seconds=idle_seconds, owners=owners)
    return bundle_tarball({
        "config.d/50-annex.config": (cfg.encode(), 0o644),
        "tokens.d/annex.token": (token.strip().encode() + b"\n", 0o600),
    })


def base_paths(local_dir: str, etc_dir: str) -> str:
    """Path knobs for a node whose state lives in ``local_dir`` and config in ``etc_dir``
    (Debian's layout for binaries)."""
    return f"""\
RELEASE_DIR = /usr
BIN = /usr/bin
SBIN = /usr/sbin
LIB = /usr/lib/condor
LIBEXEC = /usr/libexec/condor
SHARE = /usr/share/condor
LOCAL_DIR = {local_dir}
ETC = {etc_dir}
LOG = $(LOCAL_DIR)/log
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
RUN = $(LOCAL_DIR)/run
LOCK = $(LOCAL_DIR)/lock
CRED_STORE_DIR = $(LOCAL_DIR)/cred_dir
SEC_TOKEN_DIRECTORY = $(ETC)/tokens.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(ETC)/tokens.d
SEC_PASSWORD_DIRECTORY = $(ETC)/passwords.d
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR = $(ETC)/config.d
"""


def central_manager_config(*, local_dir: str, etc_dir: str, host: str, trust_domain: str) -> str:
    """``condor_config`` of the local cloud's central manager + submit node.

    Collector, negotiator and schedd in one master; IDTOKENS for daemons and annex nodes
    (annex identities are ``annex-<name>@annex``), FS for local users; short negotiation cycles
    so a demo's jobs start within seconds.
    """
    return base_paths(local_dir, etc_dir) + f"""\
CONDOR_HOST = {host}
COLLECTOR_HOST = {host}:9618
NETWORK_INTERFACE = {host}
DAEMON_LIST = MASTER COLLECTOR NEGOTIATOR SCHEDD
UID_DOMAIN = {trust_domain}
FILESYSTEM_DOMAIN = {trust_domain}
TRUST_DOMAIN = {trust_domain}
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_CLIENT_AUTHENTICATION = OPTIONAL
ALLOW_READ = *
ALLOW_WRITE = *@{trust_domain}/*, condor@*/*, root@*/*
ALLOW_DAEMON = condor@*/*, root@*/*
ALLOW_ADMINISTRATOR = condor@*/*, root@*/*
ALLOW_NEGOTIATOR = condor@*/*, root@*/*
ALLOW_ADVERTISE_STARTD = *@annex/*, condor@*/*
ALLOW_ADVERTISE_MASTER = *@annex/*, condor@*/*
ALLOW_ADVERTISE_SCHEDD = condor@*/*, root@*/*
NEGOTIATOR_INTERVAL = 5
NEGOTIATOR_MIN_INTERVAL = 1
SCHEDD_INTERVAL = 5
NEGOTIATOR_CYCLE_DELAY = 1
SHADOW_WORKLIFE = 0
MOUNT_UNDER_SCRATCH =
SYSTEM_JOB_MACHINE_ATTRS = $(SYSTEM_JOB_MACHINE_ATTRS) AnnexName EC2InstanceID
"""


def node_image_config(*, local_dir: str, etc_dir: str) -> str:
    """``condor_config`` baked into a local-cloud instance "image": paths only.  Everything that
    makes it an annex node comes from the bundle the agent installs into ``config.d``."""
    return base_paths(local_dir, etc_dir) + "DAEMON_LIST = MASTER\nMOUNT_UNDER_SCRATCH =\n"
