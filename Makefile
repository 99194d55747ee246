# condor-annex: `make demo` runs the main job on the local cloud; `make test` runs the suite;
# `make bench` runs the benchmarks.  Needs root (network namespaces, chroot) and Debian.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	@command -v ip >/dev/null || (apt-get update -qq && apt-get install -y -qq iproute2)
	@dpkg -s python3-boto3 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-boto3)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[local,test]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/condor_annex local demo

test: install
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

bench: install
	$(VENV)/bin/python -m benchmarks

clean:
	-$(VENV)/bin/condor_annex local down
	rm -rf $(VENV)
