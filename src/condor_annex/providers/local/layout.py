"""Where the local cloud's pieces are: the trixie chroot, the pool's directories inside it, the
ports and names instances see, and the names of what it writes for the CLI.

The daemon's own state directory (``STATE_DIR``: the state file, logs, instance roots) is
:data:`condor_annex.providers.local.cloud.STATE_DIR`; the pieces below the daemon are given it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The trixie chroot with Debian's HTCondor (``$CONDOR_ANNEX_ROOT``).
ROOT = Path(os.environ.get("CONDOR_ANNEX_ROOT", "/var/lib/condor-annex/root"))
#: Builds (or restores from its cache) and mounts the chroot.
BUILD_SCRIPT = Path(__file__).with_name("build_chroot.sh")
AWS_PORT = 4566          # the emulator, as seen from instances (hub namespace)
IMDS_PORT = 80           # the metadata endpoint, as seen from instances (hub namespace)
#: The pool's port: the collector's (shared port: every daemon of the central manager).
COLLECTOR_PORT = 9618
TRUST_DOMAIN = "condor-annex.local"
CM_HOSTNAME = "annex-cm"
CM_DIR = "/var/lib/condor-annex/cm"          # inside the chroot
NODES_DIR = "/var/lib/condor-annex/nodes"    # inside the chroot
#: The managed block ``local up`` writes into the user's config (``local down`` removes it).
CONFIG_BLOCK = "local cloud"
FAKE_KEY = "testing"    # moto accepts any credentials; these are not secrets
