#!/bin/sh
# forgeway-registry-gc: one garbage collection of GitLab's container registry, now.
# Installed by registry-gc-up.sh as $FORGEWAY_ETC/forgeway/registry-gc/forgeway-registry-gc
# (0755) and run by forgeway-registry-gc.timer (cron without systemd); run it by hand as
# root for a collection now.
#
#   forgeway-registry-gc
#
# The run (docs/gitlab.md, "Registry garbage collection"):
#  1. a lock (flock on $STATE/lock): a second run while one runs exits 0 at once, saying so;
#     a backup that runs (its lock held) makes this run skip, saying so: the backup copies
#     the registry's files;
#  2. the bytes of every file under the registry's storage (STORAGE, in the container); a
#     registry with no repository yet has nothing to collect: ok, freed 0, no collection;
#  3. `docker exec forgeway-gitlab gitlab-ctl registry-garbage-collect -m`: omnibus stops
#     the registry, deletes untagged manifests and every blob no manifest references, and
#     starts it again: pushes and pulls fail (502) while it runs;
#  4. the bytes again: what it freed.
# $STATE/status.json (0644) says "running" from the start and the result at the end:
# result (ok, failed, skipped), started, finished, duration_seconds, bytes_before,
# bytes_after, freed_bytes, error. Output goes to the journal (the unit's stdout) or to
# syslog (cron); the exit status is 0 for ok and skipped.
set -eu
me=forgeway-registry-gc
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
home=$(cd "$(dirname "$0")" && pwd)
[ -f "$home/settings" ] || fail "$home/settings is missing (registry-gc-up.sh writes it)"
state=$(job_setting STATE)
container=$(job_setting CONTAINER)
storage=$(job_setting STORAGE)
backup_lock=$(job_setting BACKUP_LOCK)
job_docker_host
status=$state/status.json
umask 022
mkdir -p "$state"
job_lock "$state" "a collection"

job_begin
before='' after='' freed=''
write_status() {
  duration=$(job_duration)
  cat >"$status.new" <<EOF2
{"result": "$result", "started": "$started", "finished": $(json "$finished"), "duration_seconds": $duration,
 "bytes_before": $(json_number "$before"), "bytes_after": $(json_number "$after"),
 "freed_bytes": $(json_number "$freed"), "error": $(json "$error")}
EOF2
  chmod 0644 "$status.new"
  mv -f "$status.new" "$status"
}
job_traps "stopped by a signal (a timeout?): gitlab-ctl, in the container, starts the registry when it ends"
fail() { job_fail "$@"; }
bytes() { # the bytes of every file under the registry's storage
  docker exec "$container" find "$storage" -type f -printf '%s\n' 2>"$tmp/err" >"$tmp/sizes" ||
    fail "cannot list $storage in $container: $(last "$tmp/err")"
  awk '{ s += $1 } END { printf "%.0f\n", s }' "$tmp/sizes"
}
write_status

if [ -n "$backup_lock" ] && [ -e "$backup_lock" ]; then
  exec 8<"$backup_lock"
  if ! flock -n 8; then
    result=skipped finished=$(now) error="a backup is running (lock $backup_lock): no collection while it copies the registry"
    write_status
    echo "$me: skipped: $error"
    exit 0
  fi
  exec 8<&-
fi
command -v docker >/dev/null 2>&1 || fail "no docker client on PATH"

# A registry nothing was ever pushed to has no repositories directory yet, and its garbage
# collection fails on that ("failed to mark: filesystem: Path not found", distribution 2.8):
# nothing to collect, and no reason to stop the registry.
if ! docker exec "$container" test -d "$storage/docker/registry/v2/repositories"; then
  before=$(bytes) after=$before freed=0
  result=ok finished=$(now)
  write_status
  echo "$me: ok: nothing was pushed yet (no $storage/docker/registry/v2/repositories): nothing to collect"
  exit 0
fi

before=$(bytes)
echo "$me: registry storage $storage in $container: $before bytes; collecting (the registry is down until it ends)"
docker exec "$container" gitlab-ctl registry-garbage-collect -m >"$tmp/out" 2>&1 ||
  fail "gitlab-ctl registry-garbage-collect -m failed: $(last "$tmp/out")"
sed "s/^/$me: gitlab-ctl: /" "$tmp/out" | tail -n 20
after=$(bytes)
freed=$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.0f\n", a - b }')

result=ok
finished=$(now)
write_status
echo "$me: ok: freed $freed bytes ($before -> $after)"
