#!/bin/sh
# forgeway-docker-prune: keep docker's disk in check on a runner host. Installed by
# docker-prune-up.sh as $FORGEWAY_ETC/forgeway/docker-prune/forgeway-docker-prune and
# run by forgeway-docker-prune.timer (or the cron file without systemd).
#
#   forgeway-docker-prune [SETTINGS]    SETTINGS: default "settings" next to this script
#
# SETTINGS holds KEY=value lines (not sourced, only read):
#   THRESHOLD_PERCENT  prune only when the file system of docker's data root is at
#                      least this full (df -P use percent, 0..100; 0: always)
#   KEEP_HOURS         keep images and build cache younger than this (until=<h>h)
#   DOCKER_HOST        optional: the daemon, when the environment names none
#
# It finds the data root (docker info .DockerRootDir) and its use percent; at or above
# the threshold it runs `docker image prune -a -f --filter until=<keep>h` (unused
# images, dangling or not, older than keep) and `docker builder prune -f --filter
# until=<keep>h` (a client or daemon without a builder is noted and skipped). It prints
# one line of what it did, before and after, on stdout; errors go to stderr, status 1.
set -eu

me=forgeway-docker-prune
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -le 1 ] || fail "usage: $me [SETTINGS]"
settings=${1:-$(dirname "$0")/settings}
[ -f "$settings" ] || fail "no settings file $settings (docker-prune-up.sh writes it)"
setting() { sed -n "s/^$1=//p" "$settings" | tail -n 1; }

threshold=$(setting THRESHOLD_PERCENT)
keep=$(setting KEEP_HOURS)
case $threshold in '' | *[!0-9]*) fail "$settings: THRESHOLD_PERCENT='$threshold' is not a number 0..100" ;; esac
[ "$threshold" -le 100 ] || fail "$settings: THRESHOLD_PERCENT=$threshold is above 100"
case $keep in '' | *[!0-9]*) fail "$settings: KEEP_HOURS='$keep' is not a number of hours" ;; esac
if [ -z "${DOCKER_HOST:-}" ]; then
  host=$(setting DOCKER_HOST)
  if [ -n "$host" ]; then
    DOCKER_HOST=$host
    export DOCKER_HOST
  fi
fi
command -v docker >/dev/null 2>&1 || fail "no docker client on PATH"

# stderr apart: a newer client prints warnings there, which must not join the path.
if ! root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null) || [ -z "$root" ]; then
  fail "docker info failed: $(docker info --format '{{.DockerRootDir}}' 2>&1 | tail -n 1)"
fi
[ -d "$root" ] || fail "docker's data root $root is not a directory on this host"

use() { # the use percent of $1's file system (df -P: POSIX columns)
  df -P "$1" | awk 'NR == 2 { sub(/%$/, "", $5); print $5 }'
}
before=$(use "$root")
case $before in '' | *[!0-9]*) fail "df -P $root shows no use percent" ;; esac

if [ "$before" -lt "$threshold" ]; then
  echo "$me: $root at $before% (threshold $threshold%): nothing to prune"
  exit 0
fi

# "Total reclaimed space: 1.2MB" of a prune's output, or "0B".
reclaimed() {
  _r=$(printf '%s\n' "$1" | sed -n 's/^Total reclaimed space: *//p' | tail -n 1)
  echo "${_r:-0B}"
}

out=$(docker image prune -a -f --filter "until=${keep}h" 2>&1) || fail "docker image prune failed: $(printf '%s' "$out" | tail -n 1)"
deleted=$(printf '%s\n' "$out" | grep -c '^deleted: ' || true)
images="images: ${deleted} deleted, $(reclaimed "$out")"
if out=$(docker builder prune -f --filter "until=${keep}h" 2>&1); then
  cache="build cache: $(reclaimed "$out")"
else
  cache="build cache: skipped ($(printf '%s' "$out" | tr '\n' ' ' | sed 's/ *$//' | cut -c1-120))"
fi
after=$(use "$root")
echo "$me: $root at $before% (threshold $threshold%): pruned older than ${keep}h, $images; $cache; now $after%"
