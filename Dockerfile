# One image for every role of autoft-service (see docker-compose.yml):
#   autoft serve --no-runner --host 0.0.0.0 --port 8000     the REST API (migrates the job store on start)
#   autoft runner                                          claims queued jobs and runs them on Ray
#   ray start --head ... / ray start --address=... --block  the Ray head and worker nodes
#   mlflow server ...                                      the MLflow tracking server and UI
#
# Build args:
#   BASE_IMAGE           the Python 3.11 image to build on (default python:3.11-slim; without a registry,
#                        scripts/stack_images.sh builds one from Debian's packages)
#   TORCH_SPEC           the PyTorch requirements, installed first: torch and the torchvision built for it
#                        (default torch==2.14.1 torchvision==0.29.1: on Linux x86_64 the CUDA build from
#                        PyPI; pick a CPU build with PIP_EXTRA_INDEX_URL)
#   PIP_EXTRA_INDEX_URL  an extra wheel index (e.g. a CPU or a specific CUDA PyTorch index); pip reads it
#                        from the environment of every RUN below. Build args show in `docker history`:
#                        do not put credentials in it.
#   ADAPTER_EXTRAS       the adapters' extras of pyproject.toml to install (default: timm clip hf parquet;
#                        timm and clip need a torchvision built for the installed torch)
#   PIP_INDEX_URL        the main wheel index instead of PyPI, e.g. a local mirror (unset: PyPI)
#   PIP_FIND_LINKS       a page or directory of wheels pip also picks from (e.g. a local CPU torch wheel)
#   PIP_CERT             a CA bundle pip trusts, for a build whose TLS goes through a proxy's CA: put the
#                        file in deploy/build-ca/ (git-ignored) and pass PIP_CERT=/tmp/build-ca/<file>.
#                        Unset by default: a build with a registry copies only that folder's README.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS
ARG PIP_CERT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

COPY deploy/build-ca/ /tmp/build-ca/
RUN python -m venv /opt/venv && pip install --upgrade pip

# 1. torch first and pinned, so resolving the project's "torch>=..." never pulls another build.
# hadolint ignore=SC2086
RUN pip install $TORCH_SPEC

# 2. The project's dependencies, from pyproject.toml alone: this layer survives source edits.
#    ray[default] (same version as the ray the project pins) adds the dashboard agent that serves the node
#    metrics Prometheus scrapes (--metrics-export-port).
#    Only pyproject.toml is copied for it, so that README edits do not invalidate it either.
WORKDIR /src
COPY pyproject.toml ./
#    Also the model and dataset adapters' extras (timm, open_clip, transformers, pyarrow): ADAPTER_EXTRAS.
ARG ADAPTER_EXTRAS="timm clip hf parquet"
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + [r for e in os.environ['ADAPTER_EXTRAS'].split() for r in x[e]]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install "ray[default]==$(python -c 'from importlib.metadata import version; print(version("ray"))')" \
    && rm /tmp/requirements.txt

# 3. The project itself (its dependencies are already there).
COPY README.md ./
COPY autoft_service ./autoft_service
COPY workers ./workers
RUN pip install --no-deps . && rm -rf /src/build

# Non-root; /data (the autoft data dir) and /mlartifacts (MLflow artifacts) are owned by that user, so the
# named volumes mounted there start with the right owner.
RUN useradd --create-home --uid 10001 --user-group autoft \
    && mkdir -p /data /mlartifacts \
    && chown autoft:autoft /data /mlartifacts
USER autoft
WORKDIR /home/autoft
ENV AUTOFT_DATA_DIR=/data

EXPOSE 8000
CMD ["autoft", "serve", "--no-runner", "--host", "0.0.0.0", "--port", "8000"]
