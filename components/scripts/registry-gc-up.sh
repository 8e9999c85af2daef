#!/bin/sh
# Converge the registry's garbage collection on the GitLab host (components/registry_gc.py):
# safe to run any number of times; a run that finds everything as wanted changes nothing
# and prints only "ok ...".
#
#   registry-gc-up.sh ON_CALENDAR TIMEOUT_MINUTES [DIR]
#
#   ON_CALENDAR      registry.garbage_collection.schedule, a systemd OnCalendar expression (UTC)
#   TIMEOUT_MINUTES  registry.garbage_collection.timeout_minutes (TimeoutStartSec; cron: timeout)
#   DIR              the stage: forgeway-registry-gc.sh and settings
#
# Installs, under $FORGEWAY_ETC (default /etc)/forgeway/registry-gc: forgeway-registry-gc
# (0755), settings (0644; STATE and DOCKER_HOST added here); the state directory $STATE
# (/var/lib/forgeway/registry-gc; with FORGEWAY_ETC not /etc, its parent's
# var/lib/forgeway/registry-gc); and to run it:
#   with systemd: forgeway-registry-gc.service (oneshot) + forgeway-registry-gc.timer, enabled, started
#   without: cron.d/forgeway-registry-gc (the calendar in cron's words, else Sundays at 04:30)
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no, DOCKER_HOST.
set -eu
me=registry-gc-up tag=registry-gc
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
umask 022

[ $# -eq 2 ] || [ $# -eq 3 ] || fail "usage: registry-gc-up.sh ON_CALENDAR TIMEOUT_MINUTES [DIR]"
calendar=$1
timeout=$2
dir=${3:-$(dirname "$0")}
check_calendar "$calendar"
case $timeout in '' | *[!0-9]*) fail "TIMEOUT_MINUTES '$timeout' is not a number of minutes" ;; esac
for f in forgeway-registry-gc.sh settings; do
  [ -f "$dir/$f" ] || fail "$dir/$f is missing: stage it next to registry-gc-up.sh"
done

name=forgeway-registry-gc
home=$etc/forgeway/registry-gc
state=/var/lib/forgeway/registry-gc
[ "$etc" = /etc ] || state=$(dirname "$etc")/var/lib/forgeway/registry-gc
dirs=$home/dirs

mkdirs "$home"
mkdirs "$state"
install_file "$dir/forgeway-registry-gc.sh" "$home/$name" 0755
{
  cat "$dir/settings"
  echo "STATE=$state"
  [ -z "${DOCKER_HOST:-}" ] || echo "DOCKER_HOST=$DOCKER_HOST"
} >"$tmp/settings"
install_file "$tmp/settings" "$home/settings" 0644

# --- the timer (systemd) or the cron file (without it: Sundays at 04:30 when cron cannot say the calendar) ---
install_timer "$name" "$calendar" "$home/$name" "garbage-collect GitLab's container registry" 0 "$timeout" \
  '30 4 * * 0' After=docker.service Nice=10 IOSchedulingClass=best-effort IOSchedulingPriority=7
save_dirs "$dirs"

[ -n "$changes" ] || ok "nothing to change ($home, $calendar)"
