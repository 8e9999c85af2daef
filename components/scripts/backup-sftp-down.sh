#!/bin/sh
# Undo backup-sftp-up.sh, except the backups: remove the sshd drop-in (sshd reloads), the
# authorized key and the user forgeway-backup (and its group). The repository
# ($ROOT/srv/forgeway-backup/restic) and its chroot are KEPT: they are the backups, and a
# delete must never lose them; remove them by hand when they are no longer wanted.
# Safe to run any number of times.
#
#   backup-sftp-down.sh
#
# Environment: FORGEWAY_ETC=/etc (as backup-sftp-up.sh).
set -eu
me=backup-sftp-down tag=backup-sftp
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: backup-sftp-down.sh"
user='forgeway-backup'
root=
[ "$etc" = /etc ] || root=$(dirname "$etc")
repo=$root/srv/forgeway-backup/restic
dropin=$etc/ssh/sshd_config.d/forgeway-backup.conf

if [ -f "$dropin" ]; then
  rm -f "$dropin"
  changed "removed $dropin"
  if [ "$booted" = yes ] && [ "$etc" = /etc ]; then
    systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service
    changed "sshd reloaded"
  fi
fi
remove "$etc/forgeway/backup-sftp/authorized_keys"
if [ "$(cat "$etc/forgeway/backup-sftp/forgeway-mode" 2>/dev/null || true)" = 700 ]; then
  chmod 0700 "$etc/forgeway"
  rm -f "$etc/forgeway/backup-sftp/forgeway-mode"
  changed "$etc/forgeway 0700 again"
fi
rmdir "$etc/forgeway/backup-sftp" 2>/dev/null || true
drop_state_dir "$etc/forgeway/backup-sftp"
if getent passwd "$user" >/dev/null 2>&1; then
  userdel "$user" 2>"$tmp/err" || fail "userdel $user failed (a backup running?): $(tail -n 1 "$tmp/err")"
  changed "removed user $user"
fi
if [ -d "$repo" ]; then
  note_out "kept the backup repository $repo (the backups): remove it by hand when no longer wanted"
fi
[ -n "$changes" ] || ok "nothing installed (user $user absent)"
