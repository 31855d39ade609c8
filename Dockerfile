# bids_mdd BIDS App image (Docker or podman; Apptainer: singularity.def, or this image).
#   docker build --build-arg VERSION=$(tools/version) -t bids_mdd/bids_mdd:$(tools/version) .
#   docker run --rm -u $(id -u):$(id -g) -v /data/bids:/data:ro -v /data/out:/out \
#       bids_mdd/bids_mdd:$(tools/version) /data /out participant
#
# Build arguments
#   BASE_IMAGE     python:3.11-slim-bookworm pinned by digest (any Debian-based image with
#                  python3.11 and its venv module works; tools/container-test uses a local one).
#   TORCH_VARIANT  cpu (default: no CUDA libraries) or a CUDA build of download.pytorch.org,
#                  e.g. cu128 (several GB more).
#   VERSION        the image's version label; when given it must equal bids_mdd/_version.py,
#                  the one place the version is written.
# Every Python package comes at the version in docker/requirements.lock
# (tools/lock-image-requirements writes it). Offline builds: wheels in docker/wheels/ and
# templates in docker/templateflow/ are used when present (tools/container-test fills both);
# otherwise the build downloads them.

ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---------------------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG VERSION=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
COPY docker/ /build/docker/
COPY pyproject.toml README.md /build/src/
COPY bids_mdd /build/src/bids_mdd
RUN sh /build/docker/install-python-packages.sh /build/src /opt/venv "${TORCH_VARIANT}" "${VERSION}"
RUN sh /build/docker/install-templates.sh /opt/venv /opt/templateflow

# -------------------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}
ARG VERSION=""
LABEL org.opencontainers.image.title="bids_mdd" \
      org.opencontainers.image.description="BIDS App: deep-learning analysis of major depressive disorder from T1w MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bids-mdd/bids_mdd" \
      org.opencontainers.image.documentation="https://github.com/bids-mdd/bids_mdd#readme" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/templateflow /opt/templateflow
# The same variables as singularity.def's %environment (tests/test_packaging.py compares them).
# Caches live outside $HOME (a foreign uid has none; Apptainer binds the host's); matplotlib's
# font cache is built here once. No thread variables: bids_mdd sets them from --omp-nthreads.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONNOUSERSITE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    MPLCONFIGDIR=/opt/cache/matplotlib \
    NIPYPE_CONFIG_DIR=/opt/cache/nipype \
    NIPYPE_NO_ET=1 \
    TORCH_HOME=/opt/cache/torch \
    XDG_CACHE_HOME=/tmp/.cache \
    BIDS_MDD_CONTAINER_TYPE=docker
# The commands are linked into /usr/local/bin too: a login shell (bosh's /bin/sh -l) resets PATH.
RUN mkdir -p /opt/cache/matplotlib /opt/cache/nipype /opt/cache/torch \
    && python -c "import matplotlib.font_manager" \
    && chmod -R a+rwX /opt/cache \
    && ln -s /opt/venv/bin/bids_mdd /opt/venv/bin/bids_mdd-synth /opt/venv/bin/bids_mdd-train \
             /opt/venv/bin/bids-validator-deno /usr/local/bin/ \
    && useradd --no-create-home --home-dir /tmp --uid 1000 --shell /usr/sbin/nologin bidsapp
USER bidsapp
WORKDIR /tmp
# -I (isolated): the caller's PYTHONPATH and user site packages never reach bids_mdd, which
# matters where the host environment is passed in (Apptainer without --cleanenv)
ENTRYPOINT ["/opt/venv/bin/python", "-I", "-m", "bids_mdd.cli.run"]
