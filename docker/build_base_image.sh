#!/usr/bin/env bash
# Build a minimal local Debian bookworm base image with Python 3.11, using
# debootstrap and `docker import`.  Meant for machines whose Docker engine
# cannot pull from an image registry but can reach a Debian package mirror.
#
# The resulting image (default tag paxoskv-base:bookworm) is used as
#   docker build --build-arg BASE_IMAGE=paxoskv-base:bookworm ...
# It contains: python3 (3.11), python3-venv (so `python3 -m venv` ships pip),
# ca-certificates and passwd (useradd).  In it, the interpreter is `python3`;
# there is no `python` outside a venv.
set -euo pipefail

SUITE=bookworm
TAG=${BASE_TAG:-paxoskv-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-}
FORCE=0
UPGRADE=1
KEEP_WORKDIR=0
INCLUDE_PKGS="python3,python3-venv,ca-certificates,passwd"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--force] [--tag TAG] [--mirror URL] [--security-mirror URL]
                           [--no-upgrade] [--keep-workdir] [--help]

Builds the Docker image ${TAG} from Debian ${SUITE} packages with
debootstrap (--variant=minbase) and imports it with 'docker import'.
Must run as root.  Installs debootstrap with apt-get if it is missing.

  --force                rebuild even if the image already exists
  --tag TAG              image tag (default: ${TAG}; env BASE_TAG)
  --mirror URL           Debian mirror (default: the one the host's apt uses,
                         else http://deb.debian.org/debian; env DEBIAN_MIRROR)
  --security-mirror URL  Debian security mirror for ${SUITE}-security updates
                         (default: from the host's apt sources, else
                         http://deb.debian.org/debian-security;
                         env DEBIAN_SECURITY_MIRROR)
  --no-upgrade           skip applying ${SUITE}-updates/${SUITE}-security
  --keep-workdir         do not delete the temporary rootfs (for debugging)
  -h, --help             show this help
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG=${2:?--tag needs a value}; shift ;;
        --tag=*) TAG=${1#*=} ;;
        --mirror) MIRROR=${2:?--mirror needs a value}; shift ;;
        --mirror=*) MIRROR=${1#*=} ;;
        --security-mirror) SECURITY_MIRROR=${2:?--security-mirror needs a value}; shift ;;
        --security-mirror=*) SECURITY_MIRROR=${1#*=} ;;
        --no-upgrade) UPGRADE=0 ;;
        --keep-workdir) KEEP_WORKDIR=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[build_base_image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"

if [[ $FORCE -eq 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists; nothing to do (use --force to rebuild)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; re-run as root (e.g. sudo $0)"

if ! command -v debootstrap >/dev/null 2>&1; then
    log "debootstrap not found; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends debootstrap
fi

# --- Find the Debian mirrors the host's apt uses ----------------------------
# Prints "URI SUITE" for every enabled deb source (one-line and deb822 formats).
list_apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk '
            function flush(   i, j, nu, ns, us, ss) {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*(no|false)/) {
                    nu = split(uris, us, /[ \t]+/); ns = split(suites, ss, /[ \t]+/)
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
                        if (us[i] != "" && ss[j] != "") print us[i], ss[j]
                }
                types = ""; uris = ""; suites = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { sub(/^[^:]*:[ \t]*/, ""); types = $0; next }
            tolower($1) == "uris:"    { sub(/^[^:]*:[ \t]*/, ""); uris = $0; next }
            tolower($1) == "suites:"  { sub(/^[^:]*:[ \t]*/, ""); suites = $0; next }
            tolower($1) == "enabled:" { sub(/^[^:]*:[ \t]*/, ""); enabled = $0; next }
            END { flush() }
        ' "$f"
    done
}

DEBIAN_SUITES='^(buster|bullseye|bookworm|trixie|forky|sid|oldoldstable|oldstable|stable|testing|unstable)'
if [[ -z $MIRROR || -z $SECURITY_MIRROR ]]; then
    sources=$(list_apt_sources || true)
    if [[ -z $MIRROR ]]; then
        MIRROR=$(awk -v re="${DEBIAN_SUITES}(-updates|-backports|-proposed-updates)?\$" \
            '$2 ~ re && $1 !~ /security/ { print $1; exit }' <<<"$sources")
    fi
    if [[ -z $SECURITY_MIRROR ]]; then
        SECURITY_MIRROR=$(awk -v re="${DEBIAN_SUITES}[-/]updates\$|${DEBIAN_SUITES}-security\$" \
            '$2 ~ re && ($1 ~ /security/ || $2 ~ /security/) { print $1; exit }' <<<"$sources")
    fi
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR%/}
log "mirror: $MIRROR"
log "security mirror: $SECURITY_MIRROR"

# --- debootstrap ---------------------------------------------------------------
WORKDIR=$(mktemp -d "${TMPDIR:-/var/tmp}/paxoskv-base.XXXXXX")
ROOTFS=$WORKDIR/rootfs
cleanup() {
    local m
    # Unmount anything left mounted inside the rootfs before deleting it.
    if [[ -d $ROOTFS ]]; then
        awk -v r="$ROOTFS" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
            while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    if [[ $KEEP_WORKDIR -eq 1 ]]; then
        log "keeping $WORKDIR"
    else
        rm -rf --one-file-system "$WORKDIR"
    fi
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap --variant=minbase $SUITE into $ROOTFS (this takes a few minutes)"
debootstrap --variant=minbase --include="$INCLUDE_PKGS" \
    "$SUITE" "$ROOTFS" "$MIRROR"

in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

# Same small-image conventions as Debian's official Docker images.
cat >"$ROOTFS/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# no services may be started while building container images
exit 101
EOF
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"

cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-recommends" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
# Keep docs, man pages and translations out of packages installed later too.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF

if [[ $UPGRADE -eq 1 ]]; then
    log "applying $SUITE-updates and $SUITE-security"
    if in_root apt-get update -q && in_root apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade; then
        :
    else
        log "warning: could not apply updates (mirror unreachable?); continuing with $SUITE as released"
    fi
fi
in_root apt-get clean

log "stripping apt lists, docs, man pages, locales, logs and caches"
rm -rf "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/var/cache/apt/* \
       "$ROOTFS"/var/cache/debconf/*-old \
       "$ROOTFS"/var/lib/dpkg/*-old \
       "$ROOTFS"/var/log/* \
       "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* \
       "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/usr/share/groff/* \
       "$ROOTFS"/usr/share/lintian/* \
       "$ROOTFS"/usr/share/linda/*
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$ROOTFS/usr/lib/python3" "$ROOTFS/usr/lib/python3.11" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
# Docker provides these at run time; do not bake in the host's.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/machine-id" "$ROOTFS/var/lib/dbus/machine-id"
: >"$ROOTFS/etc/machine-id"

log "importing rootfs as $TAG"
tar --numeric-owner --xattrs -C "$ROOTFS" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE + $INCLUDE_PKGS" \
        - "$TAG" >/dev/null

log "checking the image"
docker run --rm "$TAG" python3 -c 'import sys, venv, ssl, ensurepip; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'

end=$(date +%s)
size=$(docker image inspect --format '{{.Size}}' "$TAG")
log "built $TAG in $((end - start)) s, size $((size / 1024 / 1024)) MiB"
