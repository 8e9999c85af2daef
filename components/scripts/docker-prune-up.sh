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
#                                                   RandomizedDelaySec=5m
#     systemd/system/timers.target.wants/forgeway-docker-prune.timer  (enabled)
#     systemctl daemon-reload only when a unit changed, and the timer started, only
#     when systemd is running (FORGEWAY_SYSTEMD=yes without it, as in the lab: files)
#   without: cron.d/forgeway-docker-prune, its output to `logger` where installed. Cron
#     takes these calendars: minutely, hourly, daily, weekly, monthly, quarterly,
#     semiannually, yearly/annually, and (read from systemd-analyze's normalized form)
#     "[*-]*-<month or *>-<day or *> <hour>:<minute>[:00]" where hour and minute are
#     *, a number or start/step; anything else (weekday names, seconds, lists, ranges)
#     runs hourly, and the script says so.
# The other way's files are removed, so switching FORGEWAY_SYSTEMD converges too.
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
case $calendar in
  '' | *[!A-Za-z0-9\ *:/,.~+-]*) fail "ON_CALENDAR '$calendar' has characters OnCalendar does not use" ;;
esac
if command -v systemd-analyze >/dev/null 2>&1; then
  normalized=$(systemd-analyze calendar "$calendar" 2>&1) ||
    fail "ON_CALENDAR '$calendar' is not a systemd calendar: $(printf '%s' "$normalized" | tail -n 1)"
  normalized=$(printf '%s\n' "$normalized" | sed -n 's/^ *Normalized form: //p')
else
  normalized=
fi
[ -f "$dir/docker-prune.sh" ] || fail "$dir/docker-prune.sh is missing: stage it next to docker-prune-up.sh"

name=forgeway-docker-prune
home=$etc/forgeway/docker-prune
script=$home/$name
settings=$home/settings
dirs=$home/dirs
service=$units/$name.service
timer=$units/$name.timer
wants=$units/timers.target.wants/$name.timer
cron=$etc/cron.d/$name

# --- the pruning script and its settings ------------------------------------------------

install_file "$dir/docker-prune.sh" "$script" 0755
{
  echo "# forgeway-docker-prune settings, written by docker-prune-up.sh: change the stack config instead"
  echo "THRESHOLD_PERCENT=$threshold"
  echo "KEEP_HOURS=$keep"
  [ -z "${DOCKER_HOST:-}" ] || echo "DOCKER_HOST=$DOCKER_HOST"
} >"$tmp/settings"
install_file "$tmp/settings" "$settings" 0644

# --- cron form of the calendar ----------------------------------------------------------

cron_schedule() { # the cron time fields of $calendar, or nothing when cron cannot say it
  case $calendar in
    minutely) echo '* * * * *' && return 0 ;;
    hourly) echo '0 * * * *' && return 0 ;;
    daily) echo '0 0 * * *' && return 0 ;;
    weekly) echo '0 0 * * 1' && return 0 ;;
    monthly) echo '0 0 1 * *' && return 0 ;;
    quarterly) echo '0 0 1 1,4,7,10 *' && return 0 ;;
    semiannually) echo '0 0 1 1,7 *' && return 0 ;;
    yearly | annually) echo '0 0 1 1 *' && return 0 ;;
  esac
  [ -n "$normalized" ] || return 0
  # "*-MM-DD HH:MM:SS": no weekday, any year, whole minutes.
  printf '%s\n' "$normalized" | awk '
    function field(v, max) {
      if (v == "*") return "*"
      if (v ~ /^[0-9]+$/) return v + 0
      if (v ~ /^[0-9]+\/[0-9]+$/) { split(v, p, "/"); return (p[1] + 0) "-" max "/" (p[2] + 0) }
      bad = 1
    }
    NF == 2 && split($1, d, "-") == 3 && d[1] == "*" && split($2, t, ":") == 3 && t[3] == "00" {
      m = field(t[2], 59); h = field(t[1], 23); dom = field(d[3], 31); mon = field(d[2], 12)
      if (!bad && m != "*") print m, h, dom, mon, "*"
    }'
}

# --- systemd units or the cron file ------------------------------------------------------

if [ "$units_wanted" = yes ]; then
  cat >"$tmp/service" <<EOF
# forgeway: prune unused docker images and build cache when the disk is full (docker-prune-up.sh)
[Unit]
Description=forgeway: prune docker images and build cache at ${threshold}% disk use
After=docker.service

[Service]
Type=oneshot
ExecStart="$script"
Nice=10
IOSchedulingClass=idle
EOF
  cat >"$tmp/timer" <<EOF
# forgeway: check docker's disk use ($calendar) (docker-prune-up.sh)
[Unit]
Description=forgeway: check docker's disk use ($calendar)

[Timer]
OnCalendar=$calendar
Persistent=true
RandomizedDelaySec=5m

[Install]
WantedBy=timers.target
EOF
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
  schedule=$(cron_schedule)
  if [ -z "$schedule" ]; then
    schedule='0 * * * *'
    note_out "cron cannot say OnCalendar '$calendar': it runs hourly instead"
  fi
  command="'$script'"
  if command -v logger >/dev/null 2>&1; then
    command="$command 2>&1 | logger -t $name"
  fi
  cat >"$tmp/cron" <<EOF
# forgeway: prune unused docker images and build cache when the disk is full (docker-prune-up.sh)
# OnCalendar=$calendar
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$schedule root $command
EOF
  install_file "$tmp/cron" "$cron" 0644
  removed_units=no
  if [ -e "$wants" ] || [ -L "$wants" ] || [ -e "$timer" ] || [ -e "$service" ]; then
    removed_units=yes
    if [ "$booted" = yes ] && systemctl is-active --quiet "$name.timer"; then
      systemctl stop "$name.timer"
      changed "stopped $name.timer"
    fi
  fi
  remove "$wants" "$timer" "$service"
  [ "$removed_units" = no ] || [ "$booted" = no ] || systemctl daemon-reload
  if [ "$etc" = /etc ] && ! command -v cron >/dev/null 2>&1 && ! command -v crond >/dev/null 2>&1; then
    note_out "no cron daemon is installed (apt-get install cron): nothing runs $cron"
  fi
fi

save_dirs "$dirs"

[ -n "$changes" ] || ok "nothing to change ($script, $calendar)"
