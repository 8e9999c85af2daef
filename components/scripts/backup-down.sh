#!/bin/sh
# Undo backup-up.sh: stop and remove the timer and service (or the cron file), the
# scripts, settings, password, environment and known_hosts, the state directory's files
# (status.json, the staging directory, restic's cache, the lock), then the directories
# up created, when empty. NEVER the repository (the backups), and not the backup key
# (backup-key.sh --delete removes that). Does not wait for a running backup. Safe to run
# any number of times; with nothing installed it prints "ok ..." and succeeds.
#
#   backup-down.sh
#
# Environment: FORGEWAY_ETC=/etc (as backup-up.sh).
set -eu
me=backup-down tag=backup
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: backup-down.sh"
name=forgeway-backup
home=$etc/forgeway/backup
state=/var/lib/forgeway/backup
[ "$etc" = /etc ] || state=$(dirname "$etc")/var/lib/forgeway/backup

remove_timer "$name"
remove "$home/forgeway-backup" "$home/forgeway-restic" "$home/settings" "$home/password" "$home/environment" \
  "$home/known_hosts" "$state/status.json" "$state/status.json.new" "$state/lock"
for d in "$state/staging" "$state/cache"; do
  if [ -d "$d" ]; then
    rm -rf "$d"
    changed "removed $d"
  fi
done
remove_saved_dirs "$home/dirs"

[ -n "$changes" ] || ok "nothing installed ($home is absent or empty)"
