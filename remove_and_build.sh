#!/usr/bin/env bash
# Remove the cluster's containers (the names in hostfile.txt) and rebuild the
# images `paxos` (server) and `paxos_client` (client) from the Dockerfile.
#
# Base image: $BASE_IMAGE if set; otherwise python:3.11-slim when it is
# present locally or can be pulled; otherwise the local Debian image built by
# docker/build_base_image.sh (paxoskv-base:bookworm, built on first use).
# Data volumes (paxos_data_NAME) are kept.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

DEFAULT_BASE=python:3.11-slim
LOCAL_BASE=paxoskv-base:bookworm
HOSTFILE=${HOSTFILE:-hostfile.txt}
SERVER_IMAGE=${SERVER_IMAGE:-paxos}
CLIENT_IMAGE=${CLIENT_IMAGE:-paxos_client}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
NO_CACHE=()
HOST_CA=1
BUILD_SERVER=1
BUILD_CLIENT=1

usage() {
    cat <<EOF
Usage: $(basename "$0") [--no-cache] [--no-host-ca] [--server-only|--client-only] [--help]

Removes the containers named in ${HOSTFILE} (docker rm -f; their data volumes
are kept), then builds the images '${SERVER_IMAGE}' (Dockerfile target server)
and '${CLIENT_IMAGE}' (target client) with 'docker build --network host'.

Base image choice (no manual steps needed):
  1. \$BASE_IMAGE, if set (built with docker/build_base_image.sh if it is
     ${LOCAL_BASE} and missing);
  2. ${DEFAULT_BASE}, if present locally or pullable within ${PULL_TIMEOUT}s;
  3. otherwise ${LOCAL_BASE}, built from Debian packages with
     docker/build_base_image.sh (needs root; a few minutes the first time).

Options:
  --no-cache      pass --no-cache to docker build
  --no-host-ca    do not give pip in the build the host's locally added CA
                  certificates (/usr/local/share/ca-certificates/*.crt)
  --server-only   build only '${SERVER_IMAGE}'
  --client-only   build only '${CLIENT_IMAGE}'
  -h, --help      show this help

Environment: BASE_IMAGE, HOSTFILE (default hostfile.txt), SERVER_IMAGE,
CLIENT_IMAGE, PULL_TIMEOUT (seconds, default 60), PIP_INDEX_URL (passed to
the build if set), EXTRA_CA_CERTS (PEM text passed to the build, added to
the host's CAs).
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-cache) NO_CACHE=(--no-cache) ;;
        --no-host-ca) HOST_CA=0 ;;
        --server-only) BUILD_CLIENT=0 ;;
        --client-only) BUILD_SERVER=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[remove_and_build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running? are you in the docker group?)"
[[ -f $HOSTFILE ]] || die "$HOSTFILE not found"

# Server names from the hostfile ("NAME" or "NAME HOST:PORT" lines): the
# first field of each line, comments and blank lines skipped.
hostfile_names() {
    sed -e 's/\r$//' -e 's/#.*//' "$1" | awk 'NF { print $1 }'
}

# --- 1. remove the cluster's containers ----------------------------------------
mapfile -t names < <(hostfile_names "$HOSTFILE")
for name in "${names[@]}"; do
    if docker container inspect "$name" >/dev/null 2>&1; then
        log "removing container $name"
        docker rm -f "$name" >/dev/null
    fi
done

# --- 2. choose the base image -----------------------------------------------
image_present() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
    local rc=0
    log "trying: docker pull $1 (timeout ${PULL_TIMEOUT}s)"
    if command -v timeout >/dev/null 2>&1; then
        timeout "$PULL_TIMEOUT" docker pull "$1" >&2 || rc=$?
    else
        docker pull "$1" >&2 || rc=$?
    fi
    return "$rc"
}

build_local_base() {
    local runner=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "building $LOCAL_BASE needs root: run 'docker/build_base_image.sh' as root, then re-run"
        runner=(sudo)
    fi
    log "building $LOCAL_BASE with docker/build_base_image.sh"
    "${runner[@]}" docker/build_base_image.sh --tag "$LOCAL_BASE"
}

if [[ -n ${BASE_IMAGE:-} ]]; then
    log "BASE_IMAGE=$BASE_IMAGE (from the environment)"
    if ! image_present "$BASE_IMAGE"; then
        if [[ $BASE_IMAGE == "$LOCAL_BASE" ]]; then
            build_local_base
        else
            try_pull "$BASE_IMAGE" || die "base image $BASE_IMAGE is not present and cannot be pulled"
        fi
    fi
elif image_present "$DEFAULT_BASE"; then
    BASE_IMAGE=$DEFAULT_BASE
    log "using $BASE_IMAGE (present locally)"
elif try_pull "$DEFAULT_BASE"; then
    BASE_IMAGE=$DEFAULT_BASE
    log "using $BASE_IMAGE (pulled)"
else
    log "$DEFAULT_BASE is not available; using the local Debian base $LOCAL_BASE"
    BASE_IMAGE=$LOCAL_BASE
    image_present "$BASE_IMAGE" || build_local_base
fi

# --- 3. build ----------------------------------------------------------------
extra_ca=${EXTRA_CA_CERTS:-}
if [[ $HOST_CA -eq 1 ]]; then
    shopt -s nullglob globstar
    for crt in /usr/local/share/ca-certificates/**/*.crt; do
        [[ -r $crt ]] || continue
        log "passing host CA certificate $crt to pip in the build stage"
        extra_ca+=$'\n'$(cat "$crt")
    done
    shopt -u nullglob globstar
fi

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [[ -n $extra_ca ]]; then build_args+=(--build-arg "EXTRA_CA_CERTS=$extra_ca"); fi
if [[ -n ${PIP_INDEX_URL:-} ]]; then build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"); fi

build() { # target tag
    log "building image $2 (target $1, base $BASE_IMAGE)"
    docker build --network host --force-rm "${NO_CACHE[@]}" "${build_args[@]}" \
        --target "$1" --tag "$2" .
}

if [[ $BUILD_SERVER -eq 1 ]]; then build server "$SERVER_IMAGE"; fi
if [[ $BUILD_CLIENT -eq 1 ]]; then build client "$CLIENT_IMAGE"; fi

for img in "$SERVER_IMAGE" "$CLIENT_IMAGE"; do
    if image_present "$img"; then
        log "$(docker image ls --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "$img")"
    fi
done
log "done; start the cluster with ./run_all_servers.sh"
