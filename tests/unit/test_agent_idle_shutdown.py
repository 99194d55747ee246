"""Step 7b of the agent (issue 13): a node tagged ``htcondor:IdleShutdown = off`` (an
autoscaled annex's --min node) gets no idle shutdown, read after the bundle's own."""

from __future__ import annotations

from condor_annex.agent.idle_shutdown import IDLE_CONFIG, write_idle_config
from condor_annex.model import TAG_IDLE_SHUTDOWN
from condor_annex.agent import idle_shutdown


def test_the_off_tag_writes_a_config_read_after_the_bundles(tmp_path):
    path = write_idle_config(tmp_path, "off")
    assert path == tmp_path / IDLE_CONFIG
    assert "STARTD_NOCLAIM_SHUTDOWN = 0\n" in path.read_text()
    # HTCondor reads config.d in lexical order: after 50-annex.config, which sets the idle time.
    assert sorted(["50-annex.config", path.name])[-1] == path.name


def test_no_tag_or_another_value_leaves_the_bundles_idle_shutdown(tmp_path):
    assert write_idle_config(tmp_path, None) is None
    assert write_idle_config(tmp_path, "on") is None
    assert not (tmp_path / IDLE_CONFIG).exists()


def test_the_agent_reads_the_tag_create_writes():
    assert idle_shutdown.TAG_IDLE_SHUTDOWN == TAG_IDLE_SHUTDOWN
