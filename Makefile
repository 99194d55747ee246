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

# Two halves at once: the end-to-end tests (then tests/original, which shares the chroot and
# the local-cloud lock) mostly wait on the local cloud's boots and timeouts, while tests/unit and
# tests/aws use the CPU; run one after the other they took about 40 minutes on 2 cores.  The
# e2e half's report follows the other's; the status is non-zero when either failed.
PYTEST := $(VENV)/bin/python -m pytest -q -p no:cacheprovider
test: install
	@$(PYTEST) tests/e2e tests/original > $(VENV)/e2e-report.txt 2>&1 & e2e=$$!; \
	$(PYTEST) tests/unit tests/aws; rest=$$?; \
	wait $$e2e; e2e_status=$$?; \
	echo "== tests/e2e and tests/original (run at the same time as the above) =="; \
	cat $(VENV)/e2e-report.txt; \
	echo "== tests/unit + tests/aws: exit $$rest; tests/e2e + tests/original: exit $$e2e_status"; \
	test $$rest -eq 0 && test $$e2e_status -eq 0

bench: install
	$(VENV)/bin/python -m benchmarks

clean:
	-$(VENV)/bin/condor_annex local down
	rm -rf $(VENV)
