# ftorch: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine (as root).
PY := .venv/bin/python
CONFIG ?= examples/lab.yaml

.PHONY: setup image shim demo test unit e2e bench soak faults lint clean

setup:            ## system packages (QEMU 10.0 from bookworm-backports, libvirt 9.0) and .venv
	bash scripts/setup.sh

image: setup      ## the test guest (kernel, busybox initramfs, data disk); cached by content hash
	$(PY) vm-images/build.py

demo: image       ## a protected guest on two namespace hosts, a client, host A killed, B live and protected again, a clean stop
	$(PY) scripts/demo.py $(CONFIG)

test: image       ## unit tests, then end-to-end tests with real QEMU, libvirtd and namespaces
	$(PY) -m pytest -v --durations=12 $(wildcard tests/test_*.py) tests/e2e

unit:
	$(PY) -m pytest -q -m "not e2e" tests

bench: image      ## benchmarks; writes bench/results/*.json and bench/results/latest.md
	$(PY) bench/run.py

soak: image       ## 20 min idle + 10 min writing: agents' memory and disk use must stay flat; bench/results/soak.md
	$(PY) bench/soak.py

faults: image     ## seeded random fault campaign (SEED=15 COUNT=30, ~1.5 min a fault); bench/results/faults.md
	$(PY) bench/faults.py --seed $(or $(SEED),15) --count $(or $(COUNT),30)

lint:
	$(PY) -m ruff check ftorch tests bench vm-images scripts tools

clean:
	-$(PY) -m ftorch lab down
	rm -rf vm-images/build
