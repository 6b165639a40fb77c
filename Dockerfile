# seedream-server: one image for the API processes and the Ray nodes (the replicas import the same package).
#
#   docker build -t seedream-server .                                   # CPU (torch from the CPU index)
#   docker build -t seedream-server:cuda \
#     --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .  # GPU nodes
#
# EXTRAS picks the optional dependencies: s3 (boto3), ray (Ray Serve), postgres (psycopg), diffusers (torch).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG EXTRAS=s3,ray,postgres,diffusers
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CUDA bases ship no Python: take the distribution's (3.11 or newer)
RUN if ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --extra-index-url "${TORCH_INDEX}" ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 seedream && mkdir -p /data && chown seedream /data
USER seedream
ENV SEEDREAM_HOST=0.0.0.0 SEEDREAM_PORT=8000 SEEDREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["seedream", "serve"]
