# polyfabric: `make demo` runs a local fabric, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
export POLYFABRIC_TEST_PG ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: demo test lint unit bench clean venv chromium sshd

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "polyfabric needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/polyfabric up --run examples/shard_stats.yaml -p shards=16

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q -n auto

# The browser tests need Debian's Chromium (playwright never downloads one): installed when absent
# and possible (root with apt-get); otherwise they skip, or fail under CI=true.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
	  || echo "chromium is not installed: tests/browser will skip (and fail with CI=true)"

# The ssh pool provider's test starts a real sshd on loopback (package openssh-server), same rule.
sshd:
	@test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null; } \
	  || echo "sshd is not installed: the ssh pool test will skip (and fail with CI=true)"

test: $(STAMP) lint chromium sshd
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	$(PY) -m benchmarks.heartbeats

clean:
	rm -rf $(VENV) .polyfabric .pytest_cache .ruff_cache
