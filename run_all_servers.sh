#!/usr/bin/env bash
# Start one detached `paxos` server container per line of hostfile.txt on the
# Docker network paxos_network.  Each container is named (and has the
# hostname) as in the hostfile, keeps its state in its own named volume
# paxos_data_NAME (mounted at /data, kept across restarts and rebuilds), and
# sees the top-level hostfile.txt read-only at /app/hostfile.txt.
#
# TLS by default: the certificates (python -m paxos.certs) are made on first
# run in the volume paxos_tls, which the servers mount read-only at /tls and
# clients at /app/tls.  --insecure (or PAXOSKV_INSECURE=1) runs plaintext.
#
# Then talk to the cluster with:
#   docker run --network paxos_network --rm -ti -v paxos_tls:/app/tls:ro paxos_client
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

HOSTFILE=${HOSTFILE:-hostfile.txt}
SERVER_IMAGE=${SERVER_IMAGE:-paxos}
NETWORK=${NETWORK:-paxos_network}
TLS_VOLUME=${TLS_VOLUME:-paxos_tls}
INSECURE=${PAXOSKV_INSECURE:-0}
# Labels that make the network/volumes acceptable to docker-compose.yml, so
# both ways of starting the cluster share them.  Compose's default project
# name is the directory's name, lower-cased, without other characters than
# [a-z0-9_-].
COMPOSE_PROJECT=${COMPOSE_PROJECT_NAME:-$(basename "$PWD" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')}
FOLLOW=0
TERMINALS=0

usage() {
    cat <<EOF
Usage: $(basename "$0") [--insecure] [--follow] [--terminals] [--help]

For each server in ${HOSTFILE} (one NAME per line, '#' comments allowed),
starts a detached container NAME from image '${SERVER_IMAGE}':
  docker run -d --name NAME --hostname NAME --network ${NETWORK} \\
      -v paxos_data_NAME:/data -v \$PWD/${HOSTFILE}:/app/hostfile.txt:ro \\
      -v ${TLS_VOLUME}:/tls:ro \\
      ${SERVER_IMAGE} -h /app/hostfile.txt -n NAME --data-dir /data --tls-dir /tls
An existing container of that name is removed first; its volume is kept.
The network ${NETWORK} is created if missing.  Nothing is interactive
unless asked for.

TLS: the volume ${TLS_VOLUME} holds the cluster's CA and certificates,
made by python -m paxos.certs on first run; later runs keep them and add
certificates for servers new in the hostfile.  The servers accept only
peers with their member certificate and clients with the client one.

Options:
  --insecure    plaintext, no certificates: anyone who can reach the
                network can act as a server or client (PAXOSKV_INSECURE=1
                does the same)
  --follow      afterwards, follow the logs of all servers (Ctrl-C stops
                following; the servers keep running)
  --terminals   afterwards, open one terminal window per server showing its
                logs (needs a desktop: \$DISPLAY or \$WAYLAND_DISPLAY and
                x-terminal-emulator or gnome-terminal; inside tmux, opens
                one tmux window per server instead)
  -h, --help    show this help

Environment: HOSTFILE, SERVER_IMAGE (default paxos), NETWORK (default
paxos_network), TLS_VOLUME (default paxos_tls), PAXOSKV_INSECURE.

Useful afterwards:
  docker run --network ${NETWORK} --rm -ti -v ${TLS_VOLUME}:/app/tls:ro paxos_client      # client prompt
  docker run --network ${NETWORK} --rm -v ${TLS_VOLUME}:/app/tls:ro paxos_client get KEY  # one command
      (the client image has the hostfile it was built with; after editing
       ${HOSTFILE}, add -v "\$PWD/${HOSTFILE}:/app/hostfile.txt:ro" or rebuild)
  docker ps --filter network=${NETWORK}                         # status/health
  docker logs -f NAME;  docker stop NAME;  docker start NAME
  docker volume rm paxos_data_NAME                              # wipe a server
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --insecure) INSECURE=1 ;;
        --follow) FOLLOW=1 ;;
        --terminals) TERMINALS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[run_all_servers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running? are you in the docker group?)"
[[ -f $HOSTFILE ]] || die "$HOSTFILE not found"
docker image inspect "$SERVER_IMAGE" >/dev/null 2>&1 ||
    die "image '$SERVER_IMAGE' not found; build it with ./remove_and_build.sh"

HOSTFILE_ABS=$(cd "$(dirname "$HOSTFILE")" && pwd)/$(basename "$HOSTFILE")
# The servers run as an unprivileged user (uid 10001) in the containers.
if [[ -z $(find "$HOSTFILE_ABS" -maxdepth 0 -perm -o=r) ]]; then
    log "warning: $HOSTFILE is not world-readable; the servers (uid 10001) may not be able to read it (chmod a+r $HOSTFILE)"
fi

# Server names from the hostfile ("NAME" or "NAME HOST:PORT" lines): the
# first field of each line, comments and blank lines skipped.
hostfile_names() {
    sed -e 's/\r$//' -e 's/#.*//' "$1" | awk 'NF { print $1 }'
}
mapfile -t names < <(hostfile_names "$HOSTFILE")
[[ ${#names[@]} -gt 0 ]] || die "no servers in $HOSTFILE"

if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
    log "creating network $NETWORK"
    docker network create \
        --label "com.docker.compose.project=$COMPOSE_PROJECT" \
        --label "com.docker.compose.network=$NETWORK" \
        "$NETWORK" >/dev/null
fi

tls_mount=()
tls_args=()
client_mount=""
if [[ $INSECURE == 1 ]]; then
    log "warning: --insecure: plaintext; anyone on $NETWORK can act as a server or client"
else
    if ! docker volume inspect "$TLS_VOLUME" >/dev/null 2>&1; then
        docker volume create \
            --label "com.docker.compose.project=$COMPOSE_PROJECT" \
            --label "com.docker.compose.volume=$TLS_VOLUME" \
            "$TLS_VOLUME" >/dev/null
    fi
    log "TLS certificates in volume $TLS_VOLUME (made if missing)"
    docker run --rm --network none \
        --volume "$TLS_VOLUME:/tls" \
        --volume "$HOSTFILE_ABS:/app/hostfile.txt:ro" \
        --entrypoint python "$SERVER_IMAGE" \
        -m paxos.certs -h /app/hostfile.txt --out /tls ||
        die "could not make the certificates in volume $TLS_VOLUME"
    tls_mount=(--volume "$TLS_VOLUME:/tls:ro")
    tls_args=(--tls-dir /tls)
    client_mount=" -v $TLS_VOLUME:/app/tls:ro"
fi

for name in "${names[@]}"; do
    volume=paxos_data_$name
    if docker container inspect "$name" >/dev/null 2>&1; then
        log "removing existing container $name (volume $volume is kept)"
        docker rm -f "$name" >/dev/null
    fi
    if ! docker volume inspect "$volume" >/dev/null 2>&1; then
        docker volume create \
            --label "com.docker.compose.project=$COMPOSE_PROJECT" \
            --label "com.docker.compose.volume=$volume" \
            "$volume" >/dev/null
    fi
    log "starting $name"
    docker run -d \
        --name "$name" \
        --hostname "$name" \
        --network "$NETWORK" \
        --volume "$volume:/data" \
        --volume "$HOSTFILE_ABS:/app/hostfile.txt:ro" \
        "${tls_mount[@]}" \
        "$SERVER_IMAGE" \
        -h /app/hostfile.txt -n "$name" --data-dir /data "${tls_args[@]}" >/dev/null
done

docker ps --all --filter "network=$NETWORK" \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}' >&2
log "client: docker run --network $NETWORK --rm -ti$client_mount paxos_client"

open_terminals() {
    local name
    if [[ -n ${DISPLAY:-}${WAYLAND_DISPLAY:-} ]]; then
        if command -v gnome-terminal >/dev/null 2>&1; then
            for name in "${names[@]}"; do
                gnome-terminal --title="$name" -- docker logs -f "$name" >/dev/null 2>&1 &
            done
            return 0
        elif command -v x-terminal-emulator >/dev/null 2>&1; then
            for name in "${names[@]}"; do
                x-terminal-emulator -T "$name" -e docker logs -f "$name" >/dev/null 2>&1 &
            done
            return 0
        fi
    fi
    if [[ -n ${TMUX:-} ]] && command -v tmux >/dev/null 2>&1; then
        for name in "${names[@]}"; do
            tmux new-window -d -n "$name" "docker logs -f '$name'; read -r -p 'container exited; press Enter '"
        done
        return 0
    fi
    log "--terminals is unavailable here: no desktop (DISPLAY/WAYLAND_DISPLAY unset or no gnome-terminal/x-terminal-emulator) and not inside tmux"
    log "use --follow, or 'docker logs -f NAME' in a terminal of your own"
    return 1
}

if [[ $TERMINALS -eq 1 ]]; then
    open_terminals || true
fi

if [[ $FOLLOW -eq 1 ]]; then
    log "following logs of ${names[*]} (Ctrl-C to stop following; the servers keep running)"
    pids=()
    for name in "${names[@]}"; do
        # $! is docker's pid; when it ends, sed sees EOF and ends too.
        docker logs -f --tail 20 "$name" > >(sed -u "s/^/[$name] /") 2>&1 &
        pids+=($!)
    done
    trap 'kill "${pids[@]}" 2>/dev/null || true; exit 0' INT TERM
    wait
fi
