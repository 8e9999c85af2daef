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
case $calendar in
  '' | *[!A-Za-z0-9\ *:/,.~+-]*) fail "ON_CALENDAR '$calendar' has characters OnCalendar does not use" ;;
esac
if command -v systemd-analyze >/dev/null 2>&1 && ! err=$(systemd-analyze calendar "$calendar" 2>&1); then
  fail "ON_CALENDAR '$calendar' is not a systemd calendar: $(printf '%s' "$err" | tail -n 1)"
fi
case $timeout in '' | *[!0-9]*) fail "TIMEOUT_MINUTES '$timeout' is not a number of minutes" ;; esac
for f in forgeway-registry-gc.sh settings; do
  [ -f "$dir/$f" ] || fail "$dir/$f is missing: stage it next to registry-gc-up.sh"
done

name=forgeway-registry-gc
home=$etc/forgeway/registry-gc
state=/var/lib/forgeway/registry-gc
[ "$etc" = /etc ] || state=$(dirname "$etc")/var/lib/forgeway/registry-gc
dirs=$home/dirs
service=$units/$name.service
timer=$units/$name.timer
wants=$units/timers.target.wants/$name.timer
cron=$etc/cron.d/$name

mkdirs "$home"
mkdirs "$state"
install_file "$dir/forgeway-registry-gc.sh" "$home/$name" 0755
{
  cat "$dir/settings"
  echo "STATE=$state"
  [ -z "${DOCKER_HOST:-}" ] || echo "DOCKER_HOST=$DOCKER_HOST"
} >"$tmp/settings"
install_file "$tmp/settings" "$home/settings" 0644

if [ "$units_wanted" = yes ]; then
  cat >"$tmp/service" <<EOF2
# forgeway: garbage-collect GitLab's container registry (registry-gc-up.sh)
[Unit]
Description=forgeway: garbage-collect GitLab's container registry
After=docker.service

[Service]
Type=oneshot
ExecStart="$home/$name"
TimeoutStartSec=${timeout}min
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
EOF2
  cat >"$tmp/timer" <<EOF2
# forgeway: the registry's garbage collection window ($calendar) (registry-gc-up.sh)
[Unit]
Description=forgeway: garbage-collect the registry ($calendar)

[Timer]
OnCalendar=$calendar
Persistent=true

[Install]
WantedBy=timers.target
EOF2
  install_file "$tmp/service" "$service" 0644
  install_file "$tmp/timer" "$timer" 0644
  enable_unit "$timer" "$(dirname "$wants")"
  remove "$cron"
  if [ "$booted" = yes ]; then
    ! units_changed || systemctl daemon-reload
    if ! systemctl is-active --quiet "$name.timer"; then
      systemctl start "$name.timer"
      changed "started $name.timer"
    fi
  elif [ -n "$changes" ]; then
    note_out "systemd is not running here: the units are installed, not started"
  fi
else
  schedule=$(cron_fields "$calendar")
  if [ -z "$schedule" ]; then
    schedule='30 4 * * 0'
    note_out "cron cannot say OnCalendar '$calendar': it runs Sundays at 04:30 instead"
  fi
  command="timeout ${timeout}m '$home/$name'"
  if command -v logger >/dev/null 2>&1; then
    command="$command 2>&1 | logger -t $name"
  fi
  cat >"$tmp/cron" <<EOF2
# forgeway: garbage-collect GitLab's container registry (registry-gc-up.sh)
# OnCalendar=$calendar
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$schedule root $command
EOF2
  install_file "$tmp/cron" "$cron" 0644
  if [ -e "$wants" ] || [ -L "$wants" ] || [ -e "$timer" ] || [ -e "$service" ]; then
    if [ "$booted" = yes ] && systemctl is-active --quiet "$name.timer"; then
      systemctl stop "$name.timer"
      changed "stopped $name.timer"
    fi
    remove_units "$wants" "$timer" "$service"
  fi
  if [ "$etc" = /etc ] && ! command -v cron >/dev/null 2>&1 && ! command -v crond >/dev/null 2>&1; then
    note_out "no cron daemon is installed (apt-get install cron): nothing runs $cron"
  fi
fi
save_dirs "$dirs"

[ -n "$changes" ] || ok "nothing to change ($home, $calendar)"
