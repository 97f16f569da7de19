# The Tether server on an NVIDIA GPU: `tether serve` on 0.0.0.0:50051.
#
#   docker build -t tether:0.1.0 .
#   docker run --gpus all -p 50051:50051 -e TETHER_TOKEN="$(openssl rand -hex 32)" \
#       -v /srv/tether-models:/models tether:0.1.0 --models /models/models.toml
#
# Arguments after the image name go to `tether serve`. It refuses to listen on 0.0.0.0
# without a token (TETHER_TOKEN, from a secret) or TLS (--tls-cert/--tls-key, mounted).
# Without --models it serves the embedded tiny model. deploy/kubernetes runs this image.

# torch 2.13.0's Linux wheels bring their own CUDA 13.0 libraries (cuda-toolkit 13.0.3 from
# the package index); the base image adds what the NVIDIA container toolkit needs to hand
# the GPU in (its environment, and a CUDA 13.0 driver requirement checked at start).
FROM nvidia/cuda:13.0.3-base-ubuntu24.04

# tini as PID 1: it passes SIGTERM on to the server (which drains on it) also while the
# models load, before the server's own handler is in place, and reaps child processes.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# Ubuntu 24.04 ships Python 3.12; uv installs a standalone CPython 3.11 and the packages.
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    VIRTUAL_ENV=/opt/tether \
    PATH=/opt/tether/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN uv venv --python 3.11 /opt/tether

# torch first, pinned by constraints.txt, in a layer of its own: it is most of the image
# and changes least.
WORKDIR /src
COPY constraints.txt ./
RUN uv pip install --constraint constraints.txt torch==2.13.0
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY server server
RUN uv pip install --constraint constraints.txt ".[server]"

# Models live on a volume: a TOML file and the diffusers folders it names (relative paths
# are taken from the TOML file's folder). Hub downloads, if any, are cached there too.
RUN useradd --system --create-home --uid 10001 --user-group tether \
    && mkdir /models && chown tether:tether /models
ENV HF_HOME=/models/huggingface
VOLUME /models
USER 10001:10001
WORKDIR /home/tether

EXPOSE 50051
ENTRYPOINT ["/usr/bin/tini", "--", "tether", "serve", "--host", "0.0.0.0", "--port", "50051"]
