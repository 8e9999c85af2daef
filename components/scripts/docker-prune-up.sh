#!/bin/sh
# Converge the docker disk pruning of a runner host: safe to run any number of times; a
# run that finds everything as wanted changes nothing and prints only "ok ...".
#
#   docker-prune-up.sh THRESHOLD KEEP_HOURS ON_CALENDAR [DIR]
#
#   THRESHOLD    prune when docker's data root file system is at least this full
#                (percent, 0..100; runners.prune.threshold_percent)
#   KEEP_HOURS   keep unused images and build cache younger than this (0..8760)
#   ON_CALENDAR  when to check: a systemd OnCalendar expression (hourly, daily,
#                *-*-* 03:30, ...), checked by `systemd-analyze calendar` where present
#   DIR          holds docker-prune.sh, the pruning script (default: this script's own
#                directory, the stage directory of components/docker_host.py)
#
# Installs, under $FORGEWAY_ETC (default /etc):
#   forgeway/docker-prune/forgeway-docker-prune   the pruning script (0755)
#   forgeway/docker-prune/settings                THRESHOLD_PERCENT, KEEP_HOURS and the
#                                                 DOCKER_HOST of this run, if set (0644)
# and, to run it:
#   with systemd (FORGEWAY_SYSTEMD=yes, or auto and systemd is PID 1):
#     systemd/system/forgeway-docker-prune.service  oneshot, ExecStart the script
#     systemd/system/forgeway-docker-prune.timer    OnCalendar, Persistent=true,
#                                                   RandomizedDelaySec=5min
#     systemd/system/timers.target.wants/forgeway-docker-prune.timer  (enabled)
#     systemctl daemon-reload only when a unit changed, and the timer started, only
#     when systemd is PID 1 and FORGEWAY_ETC is /etc (else, as in the lab: files only)
#   without: cron.d/forgeway-docker-prune, its output to `logger` where installed. Cron
#     takes these calendars: minutely, hourly, daily, weekly, monthly, quarterly,
#     semiannually, yearly/annually, and (read from systemd-analyze's normalized form)
#     "[*-]*-<month or *>-<day or *> <hour>:<minute>[:00]" where hour and minute are
#     *, a number or start/step; anything else (weekday names, seconds, lists, ranges)
#     runs hourly, and the script says so.
# The other way's files are removed, so switching FORGEWAY_SYSTEMD converges too
# (install_timer in host-files.sh).
# Directories this script created are listed in forgeway/docker-prune/dirs:
# docker-prune-down.sh removes them (when empty) with the files above.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no, DOCKER_HOST (kept in
# the settings for the timer, which runs without this environment).
set -eu
me=docker-prune-up tag=docker-prune
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
umask 022

[ $# -eq 3 ] || [ $# -eq 4 ] || fail "usage: docker-prune-up.sh THRESHOLD KEEP_HOURS ON_CALENDAR [DIR]"
threshold=$1
keep=$2
calendar=$3
dir=${4:-$(dirname "$0")}
case $threshold in '' | *[!0-9]*) fail "THRESHOLD '$threshold' is not a percent (0..100)" ;; esac
if [ "${#threshold}" -gt 3 ] || [ "$threshold" -gt 100 ]; then fail "THRESHOLD $threshold is above 100"; fi
case $keep in '' | *[!0-9]*) fail "KEEP_HOURS '$keep' is not a number of hours" ;; esac
if [ "${#keep}" -gt 4 ] || [ "$keep" -gt 8760 ]; then fail "KEEP_HOURS $keep is above 8760 (a year)"; fi
check_calendar "$calendar"
[ -f "$dir/docker-prune.sh" ] || fail "$dir/docker-prune.sh is missing: stage it next to docker-prune-up.sh"

name=forgeway-docker-prune
home=$etc/forgeway/docker-prune
script=$home/$name
settings=$home/settings
dirs=$home/dirs

# --- the pruning script and its settings ------------------------------------------------

install_file "$dir/docker-prune.sh" "$script" 0755
{
  echo "# forgeway-docker-prune settings, written by docker-prune-up.sh: change the stack config instead"
  echo "THRESHOLD_PERCENT=$threshold"
  echo "KEEP_HOURS=$keep"
  [ -z "${DOCKER_HOST:-}" ] || echo "DOCKER_HOST=$DOCKER_HOST"
} >"$tmp/settings"
install_file "$tmp/settings" "$settings" 0644

# --- the timer (systemd) or the cron file (hourly when cron cannot say the calendar) --------

install_timer "$name" "$calendar" "$script" "prune docker images and build cache at ${threshold}% disk use" 5 0 \
  '0 * * * *' After=docker.service Nice=10 IOSchedulingClass=idle

save_dirs "$dirs"

[ -n "$changes" ] || ok "nothing to change ($script, $calendar)"
