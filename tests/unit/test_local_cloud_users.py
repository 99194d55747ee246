"""cloud-init's ``users_groups`` module runs on local instances as on EC2: a ``#cloud-config``
``users:`` entry (the seed's ``admin``, with its ``sudo:`` rule) becomes a user of the
instance's own root and a file in its ``/etc/sudoers.d``.

The stock layer's cloud-init config lists the module in the init stage; and cloud-init's own
init stage, run in an overlay over the local cloud's trixie chroot (as an instance's root is),
creates the user there and nowhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from condor_annex.providers.local import images
from condor_annex.providers.local.layout import ROOT

SEED_USERS = """#cloud-config
users:
  - name: admin
    gecos: condor-annex seed admin
    shell: /bin/bash
    lock_passwd: true
    sudo: "ALL=(root) NOPASSWD: /usr/bin/condor_token_create"
"""


def _stock_cfg(tmp_path: Path) -> dict:
    layer = images.build_stock_layer(tmp_path / "stock")
    return yaml.safe_load((layer / images.CLOUD_CFG).read_text())


def test_the_stock_config_runs_users_groups_in_the_init_stage_after_write_files(tmp_path):
    cfg = _stock_cfg(tmp_path)
    init = cfg["cloud_init_modules"]
    assert "users_groups" in init
    # Debian's own cloud.cfg order: write_files, then users (write_files_deferred is the one
    # that may name a user cloud-init creates).
    assert init.index("write_files") < init.index("users_groups")
    assert cfg["users"] == []      # no default user unless the user data asks for one
    assert "users_groups" not in cfg["cloud_config_modules"] + cfg["cloud_final_modules"]


@pytest.mark.skipif(os.geteuid() != 0 or not (ROOT / "usr/bin/cloud-init").exists()
                    or shutil.which("unshare") is None,
                    reason="needs root and the local cloud's chroot")
def test_cloud_init_creates_the_seed_admin_and_its_sudo_rule_in_the_overlay_only(tmp_path):
    stock = images.build_stock_layer(tmp_path / "stock")
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    merged = tmp_path / "merged"
    merged.mkdir()
    # The None datasource hands cloud-init the user data (no IMDS here); every other setting
    # is the stock layer's.
    datasource = {"datasource_list": ["None"],
                  "datasource": {"None": {"userdata_raw": SEED_USERS}}}
    script = f"""set -e
mount -t overlay overlay -o lowerdir={stock}:{ROOT},upperdir={tmp_path}/upper,\
workdir={tmp_path}/work {merged}
mount -t proc proc {merged}/proc
mount -t tmpfs tmpfs {merged}/run
cat > {merged}/etc/cloud/cloud.cfg.d/99z_test.cfg <<'EOF'
{yaml.safe_dump(datasource)}
EOF
chroot {merged} cloud-init init >/dev/null 2>&1 || {{ tail -n 30 {merged}/var/log/cloud-init.log; exit 1; }}
chroot {merged} getent passwd admin
cat {merged}/etc/sudoers.d/90-cloud-init-users
if [ -x {merged}/usr/bin/sudo ]; then chroot {merged} sudo -l -U admin; fi
"""
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "admin:x:" in p.stdout and ":/home/admin:/bin/bash" in p.stdout
    assert "admin ALL=(root) NOPASSWD: /usr/bin/condor_token_create" in p.stdout
    if (ROOT / "usr/bin/sudo").exists():   # chroot recipe 7: sudo itself reads the rule
        allowed = p.stdout.partition("User admin may run the following commands")[2]
        assert "(root) NOPASSWD: /usr/bin/condor_token_create" in allowed, p.stdout
    upper = tmp_path / "upper"
    assert "admin:" in (upper / "etc/passwd").read_text()
    assert (upper / "home/admin").is_dir()
    # The shared chroot (every instance's lower layer) is untouched.
    assert "admin:" not in (ROOT / "etc/passwd").read_text()
    assert not (ROOT / "etc/sudoers.d/90-cloud-init-users").exists()
