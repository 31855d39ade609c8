# bids_mdd BIDS App container.
#   docker build -t bids_mdd/bids_mdd:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out bids_mdd/bids_mdd:0.1.0 /data /out participant
# TORCH_INDEX_URL: a package index with CPU-only torch wheels keeps the image small; leave it
# empty to take PyPI's default build (with CUDA libraries).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ARG VERSION=0.1.0

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    BIDS_MDD_CONTAINER_TYPE=docker \
    BIDS_MDD_CONTAINER_TAG=bids_mdd/bids_mdd:${VERSION} \
    OMP_NUM_THREADS=1

RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else \
        pip install torch==2.13.0; \
    fi

COPY pyproject.toml README.md /src/bids_mdd/
COPY bids_mdd /src/bids_mdd/bids_mdd
RUN pip install /src/bids_mdd && rm -rf /src/bids_mdd

# Templates are fetched once at build time; at run time bids_mdd is fully offline.
RUN python -c "from templateflow import api; \
api.get('MNI152NLin2009cAsym', resolution=1, suffix='T1w', desc=None); \
api.get('MNI152NLin2009cAsym', resolution=1, suffix='mask', desc='brain')" \
    && chmod -R a+rX /opt/templateflow

RUN useradd --create-home --uid 1000 bidsapp
USER bidsapp
WORKDIR /tmp
ENTRYPOINT ["bids_mdd"]
