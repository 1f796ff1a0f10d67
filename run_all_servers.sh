#!/usr/bin/env bash
# Start one detached `paxos` server container per line of hostfile.txt on the
# Docker network paxos_network, and move a running cluster to exactly the
# servers the hostfile lists.  Each container is named (and has the
# hostname) as in the hostfile, keeps its state in its own named volume
# paxos_data_NAME (mounted at /data, kept across restarts and rebuilds), and
# sees the top-level hostfile.txt read-only at /app/hostfile.txt.
#
# The first run founds a new cluster from the hostfile.  Later runs leave the
# servers that are running alone, start the hostfile's new servers with
# --join, run `members sync` in a client container (adding before removing,
# one change at a time), then stop the server containers the hostfile no
# longer lists (their volumes are kept).  --restart restarts every server.
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
CLIENT_IMAGE=${CLIENT_IMAGE:-paxos_client}
NETWORK=${NETWORK:-paxos_network}
TLS_VOLUME=${TLS_VOLUME:-paxos_tls}
INSECURE=${PAXOSKV_INSECURE:-0}
# How long `members sync` may take in all (a new server may have a long log to
# catch up on before it is promoted).
SYNC_TIMEOUT=${SYNC_TIMEOUT:-300}
# Every server container started here carries this label; older ones are
# recognised by their image.
SERVER_LABEL=paxoskv.role=server
# Labels that make the network/volumes acceptable to docker-compose.yml, so
# both ways of starting the cluster share them.  Compose's default project
# name is the directory's name, lower-cased, without other characters than
# [a-z0-9_-].
COMPOSE_PROJECT=${COMPOSE_PROJECT_NAME:-$(basename "$PWD" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')}
FOLLOW=0
TERMINALS=0
RESTART=0

usage() {
    cat <<EOF
Usage: $(basename "$0") [--insecure] [--restart] [--sync-timeout SECONDS]
                         [--follow] [--terminals] [--help]

For each server in ${HOSTFILE} (one NAME per line, '#' comments allowed),
makes sure a detached container NAME from image '${SERVER_IMAGE}' runs:
  docker run -d --name NAME --hostname NAME --network ${NETWORK} \\
      --label ${SERVER_LABEL} \\
      -v paxos_data_NAME:/data -v \$PWD/${HOSTFILE}:/app/hostfile.txt:ro \\
      -v ${TLS_VOLUME}:/tls:ro \\
      ${SERVER_IMAGE} -h /app/hostfile.txt -n NAME --data-dir /data --tls-dir /tls [--join]
A server whose container is running is left running; a stopped container
of that name is removed and started again (its volume is kept).  The
network ${NETWORK} is created if missing.  Nothing is interactive unless
asked for.

A new cluster or a running one:
  - When no server in ${HOSTFILE} has a volume paxos_data_NAME yet, the
    servers found a new cluster whose members are the hostfile's.
  - Otherwise the cluster exists: the servers started now get --join (a
    server with a new, empty volume asks the others for the cluster and
    waits outside it until it is added; a member ignores --join).  Then
        docker run --rm --network ${NETWORK} \\
            -v \$PWD/${HOSTFILE}:/app/hostfile.txt:ro -v ${TLS_VOLUME}:/app/tls:ro \\
            ${CLIENT_IMAGE} members sync --timeout ${SYNC_TIMEOUT}
    moves the cluster's configuration to exactly the hostfile's servers,
    one change at a time (each new server added as a learner, then
    promoted once it has caught up; then the members no longer listed
    removed, the leader last), printing each step.  When it succeeds, the
    server containers on ${NETWORK} that the hostfile no longer lists are
    stopped; their containers and volumes are kept.  When it fails,
    nothing is stopped and the script exits 1 giving members sync's exit
    code; the cluster is in a valid configuration on the way, and running
    the script again carries on from there.

Growing (e.g. five servers to seven): add the lines container5 and
  container6 to ${HOSTFILE}, then run $(basename "$0").
Shrinking (e.g. to three): delete the lines of the servers to retire, then
  run $(basename "$0"): they are removed from the configuration, then
  stopped.  A majority of the voters must be running meanwhile.
Replacing a dead server NAME (its volume lost or damaged, its host gone):
  1. delete NAME's line from ${HOSTFILE} and run $(basename "$0")
     (the cluster forgets NAME);
  2. docker rm -f NAME; docker volume rm paxos_data_NAME
  3. add NAME's line back and run $(basename "$0"): NAME starts on a fresh
     volume with --join, is added as a new member and catches up.
A removed server never starts again on its old volume (its log says so):
it needs step 2 before it comes back.

TLS: the volume ${TLS_VOLUME} holds the cluster's CA and certificates,
made by python -m paxos.certs on first run; later runs keep them and add
certificates for servers new in the hostfile.  The servers accept only
peers with their member certificate and clients with the client one.

Options:
  --insecure    plaintext, no certificates: anyone who can reach the
                network can act as a server or client (PAXOSKV_INSECURE=1
                does the same)
  --restart     remove and start again every server container the hostfile
                lists, running ones too (what this script did every time
                before; volumes are kept), e.g. for a rebuilt image or
                other options
  --sync-timeout SECONDS
                how long members sync may take in all (default
                ${SYNC_TIMEOUT}; SYNC_TIMEOUT does the same)
  --follow      afterwards, follow the logs of all servers (Ctrl-C stops
                following; the servers keep running)
  --terminals   afterwards, open one terminal window per server showing its
                logs (needs a desktop: \$DISPLAY or \$WAYLAND_DISPLAY and
                x-terminal-emulator or gnome-terminal; inside tmux, opens
                one tmux window per server instead)
  -h, --help    show this help

Environment: HOSTFILE, SERVER_IMAGE (default paxos), CLIENT_IMAGE (default
paxos_client, runs members sync), NETWORK (default paxos_network),
TLS_VOLUME (default paxos_tls), SYNC_TIMEOUT, PAXOSKV_INSECURE.

Useful afterwards:
  docker run --network ${NETWORK} --rm -ti -v ${TLS_VOLUME}:/app/tls:ro ${CLIENT_IMAGE}      # client prompt
  docker run --network ${NETWORK} --rm -v ${TLS_VOLUME}:/app/tls:ro ${CLIENT_IMAGE} get KEY  # one command
      (the client image has the hostfile it was built with; after editing
       ${HOSTFILE}, add -v "\$PWD/${HOSTFILE}:/app/hostfile.txt:ro" or rebuild)
  docker run --network ${NETWORK} --rm -v "\$PWD/${HOSTFILE}:/app/hostfile.txt:ro" \\
      -v ${TLS_VOLUME}:/app/tls:ro ${CLIENT_IMAGE} members     # voters, learners, the leader
  docker ps --filter network=${NETWORK}                         # status/health
  docker logs -f NAME;  docker stop NAME;  docker start NAME
  docker rm NAME; docker volume rm paxos_data_NAME              # wipe a stopped server
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --insecure) INSECURE=1 ;;
        --restart) RESTART=1 ;;
        --sync-timeout)
            [[ $# -ge 2 ]] || { echo "error: --sync-timeout needs SECONDS" >&2; usage >&2; exit 2; }
            SYNC_TIMEOUT=$2
            shift
            ;;
        --sync-timeout=*) SYNC_TIMEOUT=${1#*=} ;;
        --follow) FOLLOW=1 ;;
        --terminals) TERMINALS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if ! [[ $SYNC_TIMEOUT =~ ^[0-9]+([.][0-9]+)?$ && ! $SYNC_TIMEOUT =~ ^0+([.]0+)?$ ]]; then
    echo "error: --sync-timeout (SYNC_TIMEOUT) must be a positive number of seconds, not '$SYNC_TIMEOUT'" >&2
    exit 2
fi

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

listed() {
    local name
    for name in "${names[@]}"; do
        [[ $name == "$1" ]] && return 0
    done
    return 1
}

# The running server containers on the network: those this script
# labelled, and older ones by their image.
server_containers() {
    {
        docker ps --filter "network=$NETWORK" --filter "label=$SERVER_LABEL" --format '{{.Names}}'
        docker ps --filter "network=$NETWORK" --filter "ancestor=$SERVER_IMAGE" --format '{{.Names}}'
    } | sort -u
}

# A running cluster is one where a server of the hostfile already has its
# volume: then the servers started now join it, and members sync moves its
# configuration to the hostfile.  Otherwise the hostfile founds a new one.
CLUSTER_EXISTS=0
for name in "${names[@]}"; do
    if docker volume inspect "paxos_data_$name" >/dev/null 2>&1; then
        CLUSTER_EXISTS=1
    fi
done
if [[ $CLUSTER_EXISTS == 1 ]]; then
    docker image inspect "$CLIENT_IMAGE" >/dev/null 2>&1 ||
        die "image '$CLIENT_IMAGE' not found (it runs members sync); build it with ./remove_and_build.sh"
else
    mapfile -t others < <(server_containers)
    if [[ ${#others[@]} -gt 0 ]]; then
        die "no server in $HOSTFILE has a volume yet, so this would found a new cluster, but the servers" \
            "${others[*]} run on $NETWORK: keep at least one of them in $HOSTFILE to change that" \
            "cluster's members (or stop them first to found a new one)"
    fi
fi

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
client_tls_mount=()
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
    client_tls_mount=(--volume "$TLS_VOLUME:/app/tls:ro")
fi

join_args=()
if [[ $CLUSTER_EXISTS == 1 ]]; then
    # A server with an empty volume asks the others for the cluster and waits
    # outside it until members sync adds it; a member ignores --join.
    join_args=(--join)
    log "the cluster exists (a server of $HOSTFILE has its volume): new servers join it"
else
    log "founding a new cluster of ${names[*]}"
fi

for name in "${names[@]}"; do
    volume=paxos_data_$name
    if docker container inspect "$name" >/dev/null 2>&1; then
        running=$(docker container inspect --format '{{.State.Running}}' "$name")
        if [[ $RESTART == 0 && $running == true ]]; then
            log "$name is running: left as it is (--restart restarts it)"
            continue
        fi
        log "removing existing container $name (volume $volume is kept)"
        docker rm -f "$name" >/dev/null
    fi
    new=""
    if ! docker volume inspect "$volume" >/dev/null 2>&1; then
        docker volume create \
            --label "com.docker.compose.project=$COMPOSE_PROJECT" \
            --label "com.docker.compose.volume=$volume" \
            "$volume" >/dev/null
        if [[ $CLUSTER_EXISTS == 1 ]]; then
            new=" (new: it joins the running cluster)"
        fi
    fi
    log "starting $name$new"
    docker run -d \
        --name "$name" \
        --hostname "$name" \
        --network "$NETWORK" \
        --label "$SERVER_LABEL" \
        --volume "$volume:/data" \
        --volume "$HOSTFILE_ABS:/app/hostfile.txt:ro" \
        "${tls_mount[@]}" \
        "$SERVER_IMAGE" \
        -h /app/hostfile.txt -n "$name" --data-dir /data "${tls_args[@]}" "${join_args[@]}" >/dev/null
done

# The servers of the hostfile that are not running, with their last words.
report_stopped_servers() {
    local name
    for name in "${names[@]}"; do
        if [[ $(docker container inspect --format '{{.State.Running}}' "$name" 2>/dev/null) != true ]]; then
            log "$name is not running; the end of its log (docker logs $name):"
            docker logs --tail 5 "$name" 2>&1 | sed 's/^/    /' >&2 || true
        fi
    done
}

if [[ $CLUSTER_EXISTS == 1 ]]; then
    # One at a time per network: the container's name says a sync is under way.
    sync_container=${NETWORK}_members_sync
    if docker container inspect "$sync_container" >/dev/null 2>&1; then
        if [[ $(docker container inspect --format '{{.State.Running}}' "$sync_container") == true ]]; then
            die "another members sync is under way in container $sync_container (docker logs -f $sync_container);" \
                "wait for it, or stop it with docker rm -f $sync_container"
        fi
        docker rm -f "$sync_container" >/dev/null
    fi
    log "members sync (up to ${SYNC_TIMEOUT}s): moving the cluster's members to the servers in $HOSTFILE"
    sync_rc=0
    docker run --rm \
        --name "$sync_container" \
        --network "$NETWORK" \
        --volume "$HOSTFILE_ABS:/app/hostfile.txt:ro" \
        "${client_tls_mount[@]}" \
        "$CLIENT_IMAGE" members sync --timeout "$SYNC_TIMEOUT" >&2 || sync_rc=$?
    case $sync_rc in
        0) ;;
        2) report_stopped_servers
           die "members sync exited 2: it refused a step or the hostfile (its message is above); no server was" \
               "stopped" ;;
        3) report_stopped_servers
           die "members sync exited 3: it did not finish within ${SYNC_TIMEOUT}s (no leader, or a new server" \
               "not running or still catching up); the cluster is in a valid configuration on the way and no" \
               "server was stopped: run this script again to carry on (--sync-timeout for longer)" ;;
        130) die "members sync was interrupted (exit 130); the step under way may or may not have been made:" \
                 "run this script again to carry on" ;;
        *) report_stopped_servers
           die "members sync failed with exit $sync_rc; no server was stopped" ;;
    esac
    # The configuration is now exactly the hostfile's servers: the others on
    # the network are no longer members.
    mapfile -t running_servers < <(server_containers)
    for name in "${running_servers[@]}"; do
        if ! listed "$name"; then
            log "stopping $name: removed from the configuration (container and volume paxos_data_$name are kept)"
            docker stop "$name" >/dev/null
        fi
    done
fi

docker ps --all --filter "network=$NETWORK" \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}' >&2
log "client: docker run --network $NETWORK --rm -ti$client_mount $CLIENT_IMAGE"

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
