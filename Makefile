# Two commands on a fresh machine with nothing but Python:
#   make run    set up and serve the example plugin on http://127.0.0.1:8000 and gRPC on 8081 (PORT=, GRPC_PORT=)
#   make test   set up and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
GRPC_PORT ?= 8081
STAMP := $(VENV)/.installed

# Debian packages the tests use: the container tests build a real image; the docs pages' test runs a browser;
# the jobs tests start a PostgreSQL server.
DEB_PACKAGES := podman buildah debootstrap chromium chromium-driver postgresql
# Container engine: podman, else docker (Colima provides docker); override with ENGINE=.
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= stevedore-server:latest
BASE_IMAGE ?=
CONTEXT := build/image
# The example plugin, the light runtimes (XGBoost's CPU build for its runtime), every wheel in plugins/, and every
# requirement in plugins/requirements.txt.
PLUGIN_ARGS = --plugin contrib/sklearn_logreg $(foreach runtime,$(LIGHT_RUNTIMES),--plugin plugins/$(runtime)) \
	--plugin xgboost-cpu \
	$(foreach wheel,$(wildcard plugins/*.whl),--plugin $(wheel)) \
	$(if $(wildcard plugins/requirements.txt),$(shell sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' -e 's/^/--plugin /' plugins/requirements.txt))

.PHONY: run test docs check venv clean deb-packages wheels image image-run image-test bench soak proto test-mlserver

# The runtimes (plugins/: a model file served with no code) light enough for every environment; mlflow and
# mlserver have environments of their own (their tests make them), as their pins clash with ours.
LIGHT_RUNTIMES := sklearn xgboost lightgbm onnx
# With their test extras (skl2onnx makes the ONNX tests' models); XGBoost's CPU build, without CUDA's libraries.
RUNTIME_REQUIREMENTS := -e 'plugins/sklearn' -e 'plugins/xgboost[cpu,test]' -e 'plugins/lightgbm[test]' \
	-e 'plugins/onnx[test]'
# pip brings uv, which installs the rest (in seconds where pip takes minutes).
$(STAMP): pyproject.toml contrib/sklearn_logreg/pyproject.toml $(foreach runtime,$(LIGHT_RUNTIMES),plugins/$(runtime)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,docs,otel]' -e contrib/sklearn_logreg $(RUNTIME_REQUIREMENTS)
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/stevedore-server run --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

test: $(STAMP) deb-packages
	$(BIN)/mkdocs build --strict --quiet --site-dir site
	$(BIN)/python -m pytest --durations=30 -m "not mlserver" tests contrib/sklearn_logreg/tests contrib/text_ngram/tests contrib/showcase/tests $(wildcard plugins/*/tests)
	$(MAKE) test-mlserver

# The tests marked `mlserver` (MLServer's own codecs and pandas build the content-type requests and read the
# answers) run alone in a virtual environment of their own, as mlserver brings its own stack (`make test` runs
# them; the main run leaves them out). Imported plainly there: a missing pandas or mlserver fails.
MLSERVER_VENV ?= build/mlserver-venv
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
# MLServer's scikit-learn runtime and our two runtimes serve the same folders side by side there
# (tests/test_mlserver_folders.py).
$(MLSERVER_STAMP): pyproject.toml plugins/mlserver/pyproject.toml plugins/sklearn/pyproject.toml
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet --upgrade pip uv
	$(MLSERVER_VENV)/bin/uv pip install --quiet --python $(MLSERVER_VENV)/bin/python -e '.[test]' 'mlserver==1.7.1' \
		'mlserver-sklearn==1.7.1' -e plugins/sklearn -e plugins/mlserver
	touch $@

test-mlserver: $(MLSERVER_STAMP)
	$(MLSERVER_VENV)/bin/python -m pytest -m mlserver tests/test_v2_content_types.py tests/test_mlserver_folders.py \
		plugins/mlserver/tests plugins/sklearn/tests

deb-packages:
	@missing=$$(for package in $(DEB_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi

# The build context: the Containerfile and a wheelhouse of the core, the plugins and their dependencies.
wheels: $(STAMP)
	rm -rf $(CONTEXT)
	$(BIN)/stevedore-server build $(PLUGIN_ARGS) --output-context $(CONTEXT) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE))

image: wheels
	$(ENGINE) build $(if $(filter podman,$(notdir $(ENGINE))),--format docker) --tag $(IMAGE) $(CONTEXT)

image-run:
	$(ENGINE) run --rm -p 127.0.0.1:$(PORT):8000 $(IMAGE)

image-test:
	scripts/image-test.sh $(ENGINE) $(IMAGE) $(PORT)

# The gRPC messages of the Open Inference Protocol, compiled from their definition (a test checks it is current).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --descriptor_set_out=stevedore_server/frontends/v2/inference.binpb \
		stevedore_server/frontends/v2/inference.proto

check: $(STAMP)
	$(BIN)/stevedore-server check

# The documentation site (mkdocs.yml, docs/) into site/: open site/index.html, no server or network needed.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .tox site

# The soak with faults (benchmarks/soak): SOAK_DURATION seconds (default 600) of mixed load on a real server while
# faults strike, SQLite then PostgreSQL (Debian's); the report is printed and kept in build/soak/. Not run by CI.
soak: $(STAMP) deb-packages
	$(BIN)/python -m benchmarks.soak

# The throughput benchmark against MLServer, KServe and a bare Starlette app, over HTTP and gRPC (not run by CI; see
# benchmarks/README.md). Settings from the environment: `ROUNDS=2 DURATION=5 make bench`, `SOAK=1 make bench`
# (the throughput soak; the soak with faults is `make soak`).
bench:
	$(PYTHON) benchmarks/bench.py
