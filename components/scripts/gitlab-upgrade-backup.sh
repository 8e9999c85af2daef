#!/bin/sh
# <host>-gitlab-pre-upgrade-backup (components/upgrade.py): a backup of the running GitLab
# before an up replaces its container with another version. Does nothing when no GitLab
# runs yet or it already runs TARGET.
# Usage: gitlab-upgrade-backup.sh HOST CONTAINER TARGET MODE STACK MAX_AGE_HOURS
# The running version is the data volume's gitlab-rails/VERSION, read through CONTAINER
# (docker cp: a stopped one too), so a rollback after a failed start, whose VERSION is
# still the old one, backs up nothing.
#   MODE  backup: run forgeway-backup now (backup.enabled; docs/backup.md) and check its status
#         manual: backups are off; a backup made by hand must be recorded, within
#                 MAX_AGE_HOURS, by the file $FORGEWAY_ETC/forgeway/upgrade/manual-backup-<RUNNING>
#                 (docs/gitlab.md, Upgrades). That file counts in backup mode too.
# Writes $FORGEWAY_ETC/forgeway/upgrade/last-upgrade (from, to, snapshot): what
# gitlab-upgrade-wait.sh's rollback advice names.
set -eu
me=gitlab-upgrade-backup
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
host=$1 container=$2 target=$3 mode=$4 stack=$5 max_hours=$6
dir=$etc/forgeway/upgrade
fail() {
  echo "host '$host': $* The container was not replaced." >&2
  exit 1
}
running=
if docker inspect "$container" >/dev/null 2>&1; then
  running=$(docker cp "$container:/var/opt/gitlab/gitlab-rails/VERSION" - 2>/dev/null | tar -xO 2>/dev/null | head -n 1 | tr -d ' \r') ||
    running=
fi
if [ -z "$running" ]; then
  echo "no GitLab data yet: nothing to back up before GitLab $target"
  exit 0
fi
if [ "$running" = "$target" ]; then
  echo "GitLab runs $target: no upgrade, no backup"
  exit 0
fi
mkdir -p "$dir"
record() { printf 'from=%s\nto=%s\nsnapshot=%s\nstack=%s\n' "$running" "$target" "$1" "$stack" >"$dir/last-upgrade"; }
marker=$dir/manual-backup-$running
if [ -f "$marker" ] && [ -n "$(find "$marker" -mmin "-$((max_hours * 60))")" ]; then
  record manual
  echo "GitLab $running -> $target: the manual backup recorded in $marker is used"
  exit 0
fi
if [ "$mode" != backup ]; then
  fail "GitLab $running -> $target needs a backup first and backups are off (backup.enabled false): back up by hand (docker exec $container gitlab-backup create, and copy /etc/gitlab off the device), then record it: mkdir -p $dir && touch $marker (valid $max_hours hours)."
fi
home=$etc/forgeway/backup
docker inspect "$container" >/dev/null 2>&1 || fail "no container $container to back up GitLab $running from: start it, or back up by hand and record it (touch $marker)."
[ -x "$home/forgeway-backup" ] || fail "$home/forgeway-backup is missing: run the up that installs backups first, or record a manual backup (touch $marker)."
state=$(sed -n 's/^STATE=//p' "$home/settings" | tail -n 1)
# A run already under way (the timer) holds this lock: wait for it, then make our own.
[ -z "$state" ] || [ ! -f "$state/lock" ] || flock "$state/lock" true
echo "GitLab $running -> $target: backing up first ($home/forgeway-backup)"
"$home/forgeway-backup" || fail "the pre-upgrade backup failed (see ${state:-the state directory}/status.json)."
status=$(cat "${state:-/nonexistent}/status.json" 2>/dev/null || true)
field() { printf '%s\n' "$status" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1; }
if [ "$(field result)" != ok ] || [ "$(field gitlab_version)" != "$running" ]; then
  fail "the pre-upgrade backup did not finish as a backup of GitLab $running (status.json: result $(field result), version $(field gitlab_version))."
fi
snapshot=$(field snapshot)
record "$snapshot"
echo "pre-upgrade backup of GitLab $running: restic snapshot $snapshot (tag gitlab-$running)"
