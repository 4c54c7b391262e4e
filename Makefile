# Red's commands. `make image` builds, `make test` sets up a fresh Debian 12 machine and runs
# every test tier. Settings below can be given on the command line: make image IMAGE=...
IMAGE ?= localhost/red:latest
BASE_IMAGE ?= nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
PYTHON_VERSION ?= 3.10
# A directory of extra *.crt files to trust during the build (intercepting proxies).
EXTRA_CA_DIR ?=
# The local Debian 12 base for machines that cannot pull the CUDA base.
RED_BASE ?= localhost/red-base:bookworm
TEST_IMAGE ?= localhost/red:test
VENV ?= .venv

# docker when an engine answers (a client alone is not enough), else podman with the flags
# these machines need (chroot isolation, runc, host network, explicit rlimits).
ENGINE := $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
# `make run` never binds the host's own port 22 (its sshd, or the way you are logged in).
RUN_SSH_PORT ?= 2222
# The front door's port, the same inside and out (its redirects name it): PORTAL_PORT if set.
RUN_PORTAL_PORT := $(or $(PORTAL_PORT),8443)
ifeq ($(ENGINE),podman)
BUILD_FLAGS = --isolation chroot --network host --format docker
# Host networking: the container's sshd listens on the host itself, so it moves off 22.
RUN_FLAGS = --runtime runc --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
	$(if $(SSH_PORT),,-e SSH_PORT=$(RUN_SSH_PORT))
# The GPU through NVIDIA's CDI spec, when the host has one (nvidia-ctk cdi generate).
GPU_FLAGS := $(shell ls /etc/cdi/nvidia.yaml /var/run/cdi/nvidia.yaml 2>/dev/null | grep -q . \
	&& echo --device nvidia.com/gpu=all)
else
BUILD_FLAGS =
# SSH and the front door (the one HTTPS port; noVNC and Jupyter are behind it on loopback).
RUN_FLAGS = -p $(RUN_SSH_PORT):22 -p $(RUN_PORTAL_PORT):$(RUN_PORTAL_PORT)
# The GPU when Docker has NVIDIA's runtime (the NVIDIA Container Toolkit).
GPU_FLAGS := $(shell docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia \
	&& echo --gpus all)
endif
# Env passed through to `make run` when set in the caller's environment.
RUN_ENV = SSH_PUBLIC_KEY PUBLIC_KEY VNC_PW VNC_PASSWORD VNC_RESOLUTION DISPLAY_SIZEW \
	DISPLAY_SIZEH JUPYTER_TOKEN OPEN_BUTTON_TOKEN SSH_PORT JUPYTER_PORT NOVNC_PORT VNC_PORT \
	PROVISIONING_SCRIPT PORTAL_PORT PORTAL_ENABLED PORTAL_DIRECT_PORTS PUBLIC_IPADDR
# The app baked into the image: make image VISOMASTER_IN_IMAGE=1 [VISOMASTER_FLAVOR=fusion ...]
APP_BUILD_ARGS = VISOMASTER_IN_IMAGE VISOMASTER_FLAVOR VISOMASTER_REPO_URL VISOMASTER_REF \
	VISOMASTER_REQUIREMENTS VISOMASTER_EXTRA_INDEX_URLS
CA_BUNDLE = .build/extra-ca.pem
TEST_DEBS = podman buildah runc debootstrap uidmap fuse-overlayfs chromium shellcheck nginx \
	openssh-client python3-venv git curl ca-certificates iproute2

.PHONY: base image run push test deps lint unit image-tests bench bench-app lock settings-docs

base:
	@if podman image exists $(RED_BASE); then echo "$(RED_BASE) exists (podman rmi it to rebuild)"; \
	else set -e; root=$$(mktemp -d); \
		debootstrap --variant=minbase bookworm "$$root"; \
		tar -C "$$root" -c . | podman import - $(RED_BASE); rm -rf "$$root"; fi

image:
	@mkdir -p .build && rm -f $(CA_BUNDLE)
	@if [ -n "$(EXTRA_CA_DIR)" ]; then cat $(EXTRA_CA_DIR)/*.crt > $(CA_BUNDLE); fi
	$(ENGINE) build $(BUILD_FLAGS) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg PYTHON_VERSION=$(PYTHON_VERSION) \
		$(foreach name,$(APP_BUILD_ARGS),$(if $($(name)),--build-arg $(name)=$($(name)))) \
		$(if $(EXTRA_CA_DIR),--secret id=extra_ca$(,)src=$(CA_BUNDLE)) \
		-t $(IMAGE) .

run:
	$(ENGINE) run --rm -it --shm-size 2g $(GPU_FLAGS) $(RUN_FLAGS) \
		$(foreach name,$(RUN_ENV),$(if $($(name)),-e $(name))) $(IMAGE)

# Push the image to its registry (IMAGE=ghcr.io/you/red:1.0 make image push).
push:
	$(ENGINE) push $(IMAGE)

# What a fresh Debian 12 machine lacks: system packages, then the venv from the lock file.
deps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && \
		apt-get install -y -q --no-install-recommends $$missing; fi
	@if ! cmp -s requirements/dev.lock $(VENV)/.red-dev.lock; then set -e; \
		python3 -m venv $(VENV); $(VENV)/bin/pip install -q -r requirements/dev.lock; \
		cp requirements/dev.lock $(VENV)/.red-dev.lock; fi
	@# The box library the deploy imports, as a built package (not editable: no .pth), again
	@# whenever box/ changed.
	@if ! tar -c --sort=name --mtime=@0 --exclude=__pycache__ box | cmp -s - $(VENV)/.red-box.tar; \
	then set -e; $(VENV)/bin/pip install -q --no-deps --no-build-isolation --force-reinstall ./box; \
		tar -c --sort=name --mtime=@0 --exclude=__pycache__ box > $(VENV)/.red-box.tar; fi

# ruff skips files without a .py suffix unless named: the extensionless Python tools are.
PY_TOOLS = $(shell grep -rlE '^\#!.*python' files bench tests | grep -v '\.py$$')
lint: deps
	$(VENV)/bin/ruff check . $(PY_TOOLS)
	cd box && ../$(VENV)/bin/ruff check .
	$(VENV)/bin/actionlint .github/workflows/*.yml
	shellcheck $$(grep -rlE '^#!/(usr/bin/env |bin/)(ba)?sh' files .ci bench tests)

unit: deps
	cd box && ../$(VENV)/bin/python -m pytest
	$(VENV)/bin/python -m pytest tests/unit

# The test image: the real Dockerfile on the local Debian 12 base, trusting this machine's
# extra CAs when it has any.
TEST_CA_DIR = $(or $(EXTRA_CA_DIR),$(if $(wildcard /usr/local/share/ca-certificates/*.crt),/usr/local/share/ca-certificates))
image-tests: deps base
	$(MAKE) image IMAGE=$(TEST_IMAGE) BASE_IMAGE=$(RED_BASE) PYTHON_VERSION=3.11 \
		EXTRA_CA_DIR=$(TEST_CA_DIR)
	RED_TEST_IMAGE=$(TEST_IMAGE) $(VENV)/bin/python -m pytest --durations=25 tests/image tests/live

test: lint unit image-tests

bench: deps base
	RED_TEST_IMAGE=$(TEST_IMAGE) RED_BASE=$(RED_BASE) EXTRA_CA_DIR=$(TEST_CA_DIR) \
		$(VENV)/bin/python bench/bench.py

# The app's first boot on a simulated network (issue 23; root: namespaces and tc): Red's tools
# against a plain seed-style script and the floor, medians of runs. Its options (--link-mbit,
# --stream-mbit, --latency-ms, --scale, --runs): make bench-app BENCH_APP_ARGS='--stream-mbit 200'
BENCH_APP_ARGS ?=
bench-app: deps
	$(VENV)/bin/python -m bench.app $(BENCH_APP_ARGS)

# Regenerate the lock files after changing pins in pyproject.toml or requirements/*.in.
lock:
	$(VENV)/bin/pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.10 -o requirements/tool.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.10 -o requirements/dev.lock
	$(VENV)/bin/uv pip compile requirements/jupyter.in --universal --python-version 3.10 -o requirements/jupyter.lock

, := ,

# Regenerate group_data/all.py and the README's settings table from the settings registry.
settings-docs: deps
	$(VENV)/bin/python -c 'from operations import settings; settings.write_docs()'

# red-doctor's GPU logic against this machine's own GPU and torch (no network, nothing
# installed): make gpu-check [GPU_PYTHON=/path/to/python-with-torch]. Exit 1: a wrong verdict.
GPU_PYTHON ?= python3
.PHONY: gpu-check
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py
