# paxoskv images.
#
#   docker build --network host --target server -t paxos .
#   docker build --network host --target client -t paxos_client .
#
# BASE_IMAGE must be a Debian-like image with Python 3.11 as `python3` and the
# venv module (with ensurepip) available: python:3.11-slim (the default, for
# machines that reach a registry) or the local debootstrap image built by
# docker/build_base_image.sh (paxoskv-base:bookworm).  remove_and_build.sh
# picks one automatically.
#
# The two images get different virtualenvs: the server needs only gRPC and
# protobuf; Pillow/ImageHash (which pull numpy, scipy and PyWavelets),
# prompt_toolkit and tqdm are for the client.  pyproject.toml stays the one
# place that pins versions, and `pip install .` still installs everything.
#
# Works with the classic builder (no BuildKit features are used).
ARG BASE_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------
# build: a venv at /opt/venv with the server's dependencies, and the
# requirement lists both images install from.
# --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# Optional extra CA certificates (PEM text) for pip, e.g. for a TLS-inspecting
# proxy between this machine and PyPI.  remove_and_build.sh passes the host's
# locally added CAs (/usr/local/share/ca-certificates).  They are appended to
# pip's own bundle in the build stages only; the final images never contain
# them.
ARG EXTRA_CA_CERTS=""
# Optional package index mirror.  An ARG is visible only in the stage that
# declares it, so every stage below that runs pip declares it again.
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        python -c 'import pip._vendor.certifi as c; print(c.where())' | xargs cat > /tmp/pip-ca.pem; \
        printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; \
    fi

# Dependencies first, from pyproject.toml alone, so that code changes do not
# re-download them.  /tmp/requirements.txt: the [project] dependencies;
# /tmp/requirements-server.txt: those named in SERVER_REQUIREMENTS, with the
# version bounds pyproject.toml gives them (the build fails if one is missing,
# rather than making a server image that cannot start).
ARG SERVER_REQUIREMENTS="cryptography grpcio grpcio-health-checking grpcio-reflection prometheus-client protobuf uvloop"
COPY pyproject.toml /src/pyproject.toml
RUN python -c 'import os, re, sys, tomllib; \
    deps = tomllib.load(open("/src/pyproject.toml", "rb")).get("project", {}).get("dependencies", []); \
    name = lambda req: re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1)).lower(); \
    wanted = os.environ["SERVER_REQUIREMENTS"].split(); \
    server = [d for d in deps if name(d) in wanted]; \
    missing = sorted(set(wanted) - {name(d) for d in server}); \
    missing and sys.exit("Dockerfile: no dependency named " + ", ".join(missing) + " in pyproject.toml; update SERVER_REQUIREMENTS"); \
    open("/tmp/requirements.txt", "w").write("".join(d + "\n" for d in deps)); \
    open("/tmp/requirements-server.txt", "w").write("".join(d + "\n" for d in server))'
RUN set -eu; \
    if [ -f /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi; \
    pip install -r /tmp/requirements-server.txt

# --------------------------------------------------------------------------
# build-client: every dependency, then the project itself (what .dockerignore
# lets through: pyproject.toml, paxos/, client/, protos/, tools/, README ...),
# as a regular (non-editable) install.
# --------------------------------------------------------------------------
FROM build AS build-client
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN set -eu; \
    if [ -f /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi; \
    pip install -r /tmp/requirements.txt
COPY . /src
RUN set -eu; \
    if [ -f /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi; \
    pip install /src; \
    cd / && python -c 'import paxos, client, client.cli, client.images'
# pip and setuptools are not needed at run time (about 25 MB).
RUN python -m pip uninstall -y -q setuptools pip

# --------------------------------------------------------------------------
# build-server: the project without its dependencies, on top of the server's
# requirements; the import check covers what the server and the health
# check load.
# --------------------------------------------------------------------------
FROM build AS build-server
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY . /src
RUN set -eu; \
    if [ -f /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi; \
    pip install --no-deps /src; \
    cd / && python -c 'import paxos.__main__, paxos.server.service, paxos.server.metrics, paxos.healthcheck, paxos.certs'
RUN python -m pip uninstall -y -q setuptools pip

# --------------------------------------------------------------------------
# runtime: the same base with the hostfile and a non-root user; the client
# and server stages add their own venv.
# --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN set -eu; \
    groupadd --system --gid 10001 paxos; \
    useradd --system --uid 10001 --gid paxos --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin paxos; \
    mkdir -p /app /data /tls /app/tls; \
    chown paxos:paxos /data /tls /app/tls; \
    chmod 0750 /data /tls /app/tls

# /tls (servers) and /app/tls (clients, found beside /app/hostfile.txt) are
# where run_all_servers.sh mounts the certificate volume; a new named volume
# takes their owner, so python -m paxos.certs can write there as paxos.
WORKDIR /app
# Default hostfile; run_all_servers.sh and docker-compose.yml mount the
# top-level hostfile.txt over it read-only, so editing it needs no rebuild.
COPY hostfile.txt /app/hostfile.txt

USER paxos

# --------------------------------------------------------------------------
# client (image paxos_client), with the certificates of run_all_servers.sh:
#   docker run --network paxos_network --rm -ti -v paxos_tls:/app/tls:ro paxos_client      # prompt
#   docker run --network paxos_network --rm -v paxos_tls:/app/tls:ro paxos_client get k    # one command
# --------------------------------------------------------------------------
FROM runtime AS client
COPY --from=build-client /opt/venv /opt/venv
ENTRYPOINT ["python", "-m", "client", "-h", "/app/hostfile.txt"]
CMD []

# --------------------------------------------------------------------------
# server (image paxos) -- last, so it is also the default target.
#   docker run -d --name container0 --hostname container0 \
#       --network paxos_network -v paxos_data_container0:/data -v paxos_tls:/tls:ro \
#       paxos -h /app/hostfile.txt -n container0 --data-dir /data --tls-dir /tls
# --------------------------------------------------------------------------
FROM runtime AS server
COPY --from=build-server /opt/venv /opt/venv
# Named volumes start out owned by paxos:paxos (copied from the image).
VOLUME ["/data"]
# The server always opens its metrics port in the image (--metrics defaults to
# $PAXOSKV_METRICS): Prometheus scrapes http://HOST:9100/metrics, and the
# health check asks /healthz there.
ENV PAXOSKV_METRICS=0.0.0.0:9100
EXPOSE 50051 9100
# Python as PID 1 ignores SIGTERM; SIGINT raises KeyboardInterrupt so the
# server can shut down cleanly on `docker stop`.
STOPSIGNAL SIGINT
# Healthy iff GET /healthz on the metrics port answers 200: the server's
# event loop is turning and it has not begun to shut down.  Probed with bash
# alone (its /dev/tcp; the image has no curl or wget), which costs about a
# millisecond of CPU where starting Python for `python -m paxos.healthcheck`
# (still there, for gRPC health by hand) costs hundreds.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PAXOSKV_METRICS##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["python", "-m", "paxos"]
CMD ["-h", "/app/hostfile.txt", "--data-dir", "/data"]
