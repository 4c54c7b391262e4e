# syntax=docker/dockerfile:1
# Red: a VisoMaster GPU workstation. The image is what `deploy.py` declares, applied by
# pyinfra inside the build; the container's start re-applies it with the runtime env.
#
# CUDA 12.4.1 + cuDNN runtime on Ubuntu 22.04: VisoMaster pins torch 2.4.1+cu124 and
# onnxruntime-gpu 1.20 (CUDA 12, cuDNN 9), and Ubuntu 22.04 ships the Python 3.10 it needs.
ARG BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

# The app venv's Python; a Debian 12 base (tests) builds with 3.11.
ARG PYTHON_VERSION=3.10
# Mount NVENC/NVDEC (video) and graphics too, as Vast's base image does (CUDA's: compute,utility).
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    NVIDIA_DRIVER_CAPABILITIES=all \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RED_PYTHON_VERSION=${PYTHON_VERSION}

LABEL org.opencontainers.image.title="Red" \
      org.opencontainers.image.description="VisoMaster GPU workstation: SSH, JupyterLab, a VNC desktop in the browser, under supervisor" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Bootstrap: an interpreter and the locked pyinfra, nothing else (the deploy installs the box
# library, which it imports, from the build context below). pip brings only uv, the lock's own
# pin; uv installs the lock (seconds, where pip takes tens). The tool venv is where a
# box converged over SSH gets it too: the deploy below takes it over (operations/runtime.py).
COPY files/build/usr/sbin/policy-rc.d /usr/sbin/policy-rc.d
COPY files/build/opt/red/bin/red-with-extra-ca /opt/red/bin/red-with-extra-ca
COPY requirements/tool.lock /tmp/red-bootstrap/tool.lock
RUN --mount=type=secret,id=extra_ca \
    apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && python3 -m venv /opt/red/tool \
 && /opt/red/bin/red-with-extra-ca /opt/red/tool/bin/pip install -q --no-cache-dir \
      "$(grep '^uv==' /tmp/red-bootstrap/tool.lock | cut -d' ' -f1)" \
 && /opt/red/bin/red-with-extra-ca /opt/red/tool/bin/uv pip install --no-cache \
      --python /opt/red/tool/bin/python -r /tmp/red-bootstrap/tool.lock \
 && rm -rf /var/lib/apt/lists/* /tmp/red-bootstrap

# The deploy itself: its install half, which reads no runtime settings and bakes no secret.
# It runs from the build context and copies itself to /opt/red/deploy (stamped with its
# version) exactly as it does on a box converged over SSH.
COPY . /tmp/red-src
WORKDIR /tmp/red-src
RUN --mount=type=secret,id=extra_ca \
    /opt/red/tool/bin/uv pip install --no-cache -q --python /opt/red/tool/bin/python \
      --no-deps --no-index --no-build-isolation ./box \
 && /opt/red/bin/red-with-extra-ca \
      /opt/red/tool/bin/pyinfra @local deploy.py -y --data red_phase=install \
 && /opt/red/bin/red-provision mark-installed --by "image build" \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /root/.cache /tmp/* /logs/*
WORKDIR /opt/red/deploy

# Optional: the app baked in (--build-arg VISOMASTER_IN_IMAGE=1): its checkout at the pinned
# ref and its packages; the models are still fetched and verified at boot. The VISOMASTER_*
# build args choose the app (empty: the flavor's defaults) and stay as the image's env, so the
# boot expects the very checkout that was baked (a container's own -e still wins). After the
# lean image's layers: the default build only adds an empty step.
ARG VISOMASTER_IN_IMAGE=0
ARG VISOMASTER_FLAVOR=
ARG VISOMASTER_REPO_URL=
ARG VISOMASTER_REF=
ARG VISOMASTER_REQUIREMENTS=
ARG VISOMASTER_EXTRA_INDEX_URLS=
ENV VISOMASTER_FLAVOR=${VISOMASTER_FLAVOR} \
    VISOMASTER_REPO_URL=${VISOMASTER_REPO_URL} \
    VISOMASTER_REF=${VISOMASTER_REF} \
    VISOMASTER_REQUIREMENTS=${VISOMASTER_REQUIREMENTS} \
    VISOMASTER_EXTRA_INDEX_URLS=${VISOMASTER_EXTRA_INDEX_URLS}
RUN --mount=type=secret,id=extra_ca \
    if [ "$VISOMASTER_IN_IMAGE" = 1 ]; then \
      /opt/red/bin/red-with-extra-ca \
        /opt/red/tool/bin/pyinfra @local deploy.py -y --data red_phase=install \
      && rm -rf /root/.cache /tmp/* /logs/*; \
    fi

# SSH and the front door; noVNC and Jupyter listen on loopback behind it.
EXPOSE 22 8443
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/opt/red/bin/red-healthcheck"]
ENTRYPOINT ["/opt/red/bin/red-entrypoint"]
