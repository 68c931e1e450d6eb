# mmguard image: the API (`mmguard serve`) and the workers (`celery -A worker worker`).
#   docker build -t mmguard .                                   # CPU torch (default)
#   docker build -t mmguard:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MMGUARD_DATA_DIR=/data \
    MMGUARD_STORAGE_DIR=/data/storage \
    MMGUARD_WORK_DIR=/tmp/mmguard-work \
    MMGUARD_CACHE_DIR=/data/cache

WORKDIR /srv/mmguard

# torch first (its own index decides CPU or CUDA), in a layer that survives code changes
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml README.md alembic.ini ./
COPY mmguard_core ./mmguard_core
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
RUN pip install -e ".[service]"

RUN useradd --create-home --uid 1000 mmguard && mkdir -p /data && chown mmguard /data
USER mmguard
VOLUME ["/data"]
EXPOSE 8000

# embedded default when run alone: SQLite + local storage + a worker child, all under /data
CMD ["mmguard", "serve", "--host", "0.0.0.0", "--port", "8000"]
