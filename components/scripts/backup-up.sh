#!/bin/sh
# Converge the GitLab host's backups (components/backup.py): safe to run any number of
# times; a run that finds everything as wanted changes nothing and prints only "ok ...".
#
#   backup-up.sh ON_CALENDAR DELAY_MINUTES TIMEOUT_MINUTES [DIR] < SECRETS
#
#   ON_CALENDAR      backup.schedule, a systemd OnCalendar expression (UTC)
#   DELAY_MINUTES    backup.randomized_delay_minutes (the timer's RandomizedDelaySec)
#   TIMEOUT_MINUTES  backup.timeout_minutes (the service's TimeoutStartSec; cron: timeout)
#   DIR              the stage: forgeway-backup.sh, forgeway-restic.sh, settings, known_hosts
#   SECRETS (stdin only): the repository password on the first line, then the environment
#                    file (export lines of backup_environment; none: nothing)
#
# Installs, under $FORGEWAY_ETC (default /etc)/forgeway/backup:
#   forgeway-backup (0755), forgeway-restic (0755), settings (0644; STATE and DOCKER_HOST
#   added here), known_hosts (0644), password and environment (root 0600)
# (id_ed25519 is backup-key.sh's), the state directory $STATE (/var/lib/forgeway/backup;
# with FORGEWAY_ETC not /etc, its parent's var/lib/forgeway/backup), and to run it:
#   with systemd: forgeway-backup.service (oneshot) + forgeway-backup.timer, enabled, started
#   without: cron.d/forgeway-backup (the calendar in cron's words, else daily at 03:15)
# Then the repository: `forgeway-restic cat config` (takes no lock) opens it; only when
# restic says there is no repository there, `restic init` makes one. A wrong password or
# an unreachable repository fails the run, naming the repository (never a credential).
# Never takes a restic lock and never waits for a running backup.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no, DOCKER_HOST.
set -eu
me=backup-up tag=backup
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
umask 022

[ $# -eq 3 ] || [ $# -eq 4 ] || fail "usage: backup-up.sh ON_CALENDAR DELAY_MINUTES TIMEOUT_MINUTES [DIR] < SECRETS"
calendar=$1
delay=$2
timeout=$3
dir=${4:-$(dirname "$0")}
check_calendar "$calendar"
case $delay in '' | *[!0-9]*) fail "DELAY_MINUTES '$delay' is not a number of minutes" ;; esac
case $timeout in '' | *[!0-9]*) fail "TIMEOUT_MINUTES '$timeout' is not a number of minutes" ;; esac
for f in forgeway-backup.sh forgeway-restic.sh settings known_hosts; do
  [ -f "$dir/$f" ] || fail "$dir/$f is missing: stage it next to backup-up.sh"
done
command -v restic >/dev/null 2>&1 || fail "restic is not installed on this host: apt-get install restic"

name=forgeway-backup
home=$etc/forgeway/backup
state=/var/lib/forgeway/backup
[ "$etc" = /etc ] || state=$(dirname "$etc")/var/lib/forgeway/backup
dirs=$home/dirs

# --- secrets, from stdin only ------------------------------------------------------------
umask 077
cat >"$tmp/stdin"
sed -n 1p "$tmp/stdin" | tr -d '\n' >"$tmp/password"
sed 1d "$tmp/stdin" >"$tmp/environment"
rm -f "$tmp/stdin"
[ -s "$tmp/password" ] || fail "no repository password on stdin (backup_password)"
umask 022

# --- files ---------------------------------------------------------------------------------
mkdirs "$home"
mkdirs "$state"
install_file "$dir/forgeway-backup.sh" "$home/forgeway-backup" 0755
install_file "$dir/forgeway-restic.sh" "$home/forgeway-restic" 0755
{
  cat "$dir/settings"
  echo "STATE=$state"
  [ -z "${DOCKER_HOST:-}" ] || echo "DOCKER_HOST=$DOCKER_HOST"
} >"$tmp/settings"
install_file "$tmp/settings" "$home/settings" 0644
install_file "$dir/known_hosts" "$home/known_hosts" 0644
install_file "$tmp/password" "$home/password" 0600
install_file "$tmp/environment" "$home/environment" 0600
chown root:root "$home/password" "$home/environment" 2>/dev/null || true
if grep -q '^SFTP_HOST=.' "$home/settings" && [ ! -s "$home/id_ed25519" ]; then
  fail "$home/id_ed25519 is missing: the backup key (backup-key.sh) logs in to the SFTP repository"
fi

# --- the timer (systemd) or the cron file (without it: daily at 03:15 when cron cannot say the calendar) ---
install_timer "$name" "$calendar" "$home/$name" "back GitLab up into the restic repository" "$delay" "$timeout" \
  '15 3 * * *' After='docker.service network-online.target' Wants=network-online.target \
  Nice=10 IOSchedulingClass=best-effort IOSchedulingPriority=7
save_dirs "$dirs"

# --- the repository: opened, or made when there is none ----------------------------------------
shown=$(sed -n 's/^REPOSITORY_SHOWN=//p' "$home/settings" | tail -n 1)
if "$home/forgeway-restic" cat config >/dev/null 2>"$tmp/err"; then
  ok "repository $shown opens with backup_password"
elif grep -q 'Is there a repository at the following location' "$tmp/err"; then
  "$home/forgeway-restic" init >"$tmp/out" 2>"$tmp/err" ||
    fail "restic init of $shown failed: $(tail -n 2 "$tmp/err" | tr '\n' ' ')"
  changed "repository $shown initialised (restic init)"
elif grep -q 'wrong password' "$tmp/err"; then
  fail "the repository $shown does not open with backup_password (wrong password, or another repository's):" \
    "set the password it was made with, or point backup.repository elsewhere; nothing else was changed there"
else
  fail "cannot open the repository $shown: $(grep -v '^ *$' "$tmp/err" | tail -n 2 | tr '\n' ' ')"
fi

[ -n "$changes" ] || ok "nothing to change ($home, $calendar)"
