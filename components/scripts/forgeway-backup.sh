#!/bin/sh
# forgeway-backup: one backup of GitLab into the restic repository, now. Installed by
# backup-up.sh as $FORGEWAY_ETC/forgeway/backup/forgeway-backup (0755) and run by
# forgeway-backup.timer (cron without systemd); run it by hand as root for a backup now.
#
#   forgeway-backup
#
# The run (docs/backup.md; the issue-18 contract):
#  1. a lock (flock on $STATE/lock): a second run while one runs exits 0 at once, saying so;
#  2. `restic unlock`: removes stale locks only (restic keeps a live one's);
#  3. `docker exec forgeway-gitlab gitlab-backup create BACKUP=forgeway_<VERSION>
#     STRATEGY=copy GZIP_RSYNCABLE=yes CRON=1`, VERSION read from the container;
#  4. the staging directory $STATE/staging, holding exactly
#       gitlab/forgeway_<VERSION>_gitlab_backup.tar
#       config/gitlab-secrets.json, config/ssh_host_*_key, config/ssh_host_*_key.pub (from /etc/gitlab)
#       config/gitlab.rb.rendered   (GITLAB_OMNIBUS_CONFIG; no secret: those are in a file it loads)
#       manifest.json               (gitlab_version, edition, backup_file, created, registry, host)
#  5. ONE snapshot of it (tags forgeway and gitlab-<VERSION>, --host HOST);
#  6. `restic forget --prune` with the retention of the settings;
#  7. the backup tar removed from the container, the staging directory emptied.
# $STATE/status.json (0644, no secret) says "running" from the start and the result at the
# end. Output goes to the journal (the unit's stdout) or to syslog (cron); the exit status
# is 0 only for a backup that was saved and pruned.
set -eu
me=forgeway-backup
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
home=$(cd "$(dirname "$0")" && pwd)
restic=$home/forgeway-restic
[ -f "$home/settings" ] || fail "$home/settings is missing (backup-up.sh writes it)"
state=$(job_setting STATE)
container=$(job_setting CONTAINER)
host=$(job_setting HOST)
repository=$(job_setting REPOSITORY_SHOWN)
retention=$(job_setting RETENTION)
registry=$(job_setting REGISTRY)
job_docker_host
staging=$state/staging
status=$state/status.json
umask 077
mkdir -p "$state"
chmod 0755 "$state"
job_lock "$state" "a backup"

job_begin
version='' backup_file='' snapshot='' added=''
write_status() {
  duration=$(job_duration)
  cat >"$status.new" <<EOF2
{"result": "$result", "started": "$started", "finished": $(json "$finished"), "snapshot": $(json "$snapshot"),
 "gitlab_version": $(json "$version"), "backup_file": $(json "$backup_file"), "repository": $(json "$repository"),
 "duration_seconds": $duration, "added_bytes": $(json_number "$added"), "error": $(json "$error")}
EOF2
  chmod 0644 "$status.new"
  mv -f "$status.new" "$status"
}
cleanup() {
  if [ -n "$backup_file" ]; then
    docker exec "$container" rm -f "/var/opt/gitlab/backups/$backup_file" >/dev/null 2>&1 || true
  fi
  rm -rf "$staging"
}
job_traps "stopped by a signal (a timeout?)" cleanup
fail() { job_fail "$@"; }
write_status

command -v docker >/dev/null 2>&1 || fail "no docker client on PATH"
command -v restic >/dev/null 2>&1 || fail "restic is not installed on this host: apt-get install restic"
version=$(docker exec "$container" cat /opt/gitlab/embedded/service/gitlab-rails/VERSION 2>"$tmp/err") ||
  fail "cannot read GitLab's version from container $container: $(last "$tmp/err")"
version=$(printf '%s' "$version" | tr -d '[:space:]')
case $version in '' | *[!A-Za-z0-9.-]*) fail "container $container reports version '$version', not a GitLab version" ;; esac
edition=ce
case $version in *-ee) edition=ee ;; esac
name=forgeway_$version
backup_file=${name}_gitlab_backup.tar
echo "$me: GitLab $version ($edition) into $repository"

# Stale locks only: restic leaves the lock of a process that still runs.
"$restic" unlock >"$tmp/out" 2>&1 || fail "restic unlock on $repository failed: $(last "$tmp/out")"

docker exec "$container" rm -f "/var/opt/gitlab/backups/$backup_file" >/dev/null 2>&1 || true
docker exec "$container" gitlab-backup create "BACKUP=$name" STRATEGY=copy GZIP_RSYNCABLE=yes CRON=1 \
  >"$tmp/out" 2>&1 || fail "gitlab-backup create failed: $(last "$tmp/out")"

rm -rf "$staging"
mkdir -p "$staging/gitlab" "$staging/config" "$tmp/etc"
docker cp "$container:/var/opt/gitlab/backups/$backup_file" - 2>"$tmp/err" | tar -x -C "$staging/gitlab" ||
  fail "cannot copy $backup_file out of $container: $(last "$tmp/err")"
[ -s "$staging/gitlab/$backup_file" ] || fail "gitlab-backup create left no $backup_file"
docker cp "$container:/etc/gitlab" - 2>"$tmp/err" | tar -x -C "$tmp/etc" ||
  fail "cannot copy /etc/gitlab out of $container: $(last "$tmp/err")"
[ -s "$tmp/etc/gitlab/gitlab-secrets.json" ] ||
  fail "$container has no /etc/gitlab/gitlab-secrets.json: without it a restore cannot decrypt GitLab's secrets"
cp "$tmp/etc/gitlab/gitlab-secrets.json" "$staging/config/"
for key in "$tmp"/etc/gitlab/ssh_host_*_key "$tmp"/etc/gitlab/ssh_host_*_key.pub; do
  [ ! -f "$key" ] || cp "$key" "$staging/config/"
done
docker exec "$container" printenv GITLAB_OMNIBUS_CONFIG >"$staging/config/gitlab.rb.rendered" 2>/dev/null ||
  echo "# GITLAB_OMNIBUS_CONFIG is not set in $container" >"$staging/config/gitlab.rb.rendered"
cat >"$staging/manifest.json" <<EOF2
{"gitlab_version": $(json "$version"), "edition": "$edition", "backup_file": $(json "$backup_file"),
 "created": "$(now)", "registry": $(json "$registry"), "host": $(json "$host")}
EOF2

"$restic" backup --json --host "$host" --tag forgeway --tag "gitlab-$version" "$staging" >"$tmp/out" 2>"$tmp/err" ||
  fail "restic backup into $repository failed: $(last "$tmp/err")"
summary=$(grep '"message_type":"summary"' "$tmp/out" | tail -n 1)
snapshot=$(printf '%s' "$summary" | sed -n 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/p')
added=$(printf '%s' "$summary" | sed -n 's/.*"data_added":\([0-9]*\).*/\1/p')
[ -n "$snapshot" ] || fail "restic backup printed no snapshot id: $(last "$tmp/err")"
echo "$me: snapshot $snapshot ($backup_file, ${added:-?} bytes added)"

# shellcheck disable=SC2086 # RETENTION: --keep-* options, no spaces inside one
"$restic" forget --prune --host "$host" --tag forgeway $retention >"$tmp/out" 2>&1 ||
  fail "snapshot $snapshot was saved, but restic forget --prune failed: $(last "$tmp/out")"

result=ok
finished=$(now)
write_status
echo "$me: ok: snapshot $snapshot, pruned ($retention)"
