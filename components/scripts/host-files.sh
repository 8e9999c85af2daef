# shellcheck shell=sh
# forgeway's shell library: every host script sources it right after `set -eu`:
#
#   me=segment-up tag=          # its name (fail's messages); tag: prefix of changed/ok
#   # shellcheck source=host-files.sh
#   . "$(dirname "$0")/host-files.sh"
#
# A script travels to a host with this file inlined in place of that line
# (components/scripts/__init__.py script()), so a host never needs a copy of it.
# Two scripts do not source it: stage.sh (it writes the stage before anything runs) and
# check-arch.sh (the read-only check as the login user, before sudo is known to work).
#
# Sourcing checks the environment (FORGEWAY_ETC absolute and quotable in unit and cron
# files; FORGEWAY_SYSTEMD auto, yes or no; a DOCKER_HOST files can hold) and sets:
#   etc            $FORGEWAY_ETC (default /etc)
#   units          $etc/systemd/system
#   systemd        FORGEWAY_SYSTEMD as given (default auto)
#   booted         yes when systemd is PID 1 (sd_booted)
#   units_wanted   yes when boot units are wanted: FORGEWAY_SYSTEMD=yes, or auto and booted
#   tmp            a private scratch directory, removed on exit
#   changes        what changed, "|"-joined; empty: nothing
# Messages: changed MSG / ok MSG print "changed TAG: MSG" / "ok TAG: MSG" (no "TAG: "
# without a tag); gone MSG prints "removed MSG"; note MSG goes to stderr; fail MSG exits 1.
# Files: mkdirs DIR (missing parents 0755, each added to $created), install_file SRC DST
# MODE (atomic, only when text or mode differ; installed=yes when it wrote; "ok DST" too
# when say_ok=yes), remove PATH..., save_dirs FILE / remove_saved_dirs FILE (directories
# a script created, removed by its down when empty).
# drop PATH... / drop_state_dir DIR (a down's files and its directory).
# Units (the host-service seam, components/host_service.py): install_unit, enable_unit,
# units_changed, remove_units. nftables: read_ruleset, nft_check_table, nft_load_table,
# nft_sync_table, nft_boot_unit UNIT WHAT FILE..., restore_ipv6_sysctls. IPv6 while forwarding: ipv6_conf_set, keep_ra.
# Timers: check_calendar CALENDAR [LABEL], cron_fields CALENDAR (a systemd calendar as cron
# time fields), install_timer / remove_timer (a service on a calendar, by systemd or cron).
# docker: update_ca, restart_docker, wait_healthy CONTAINER TIMEOUT. Processes and links: proc_ok (yes when /proc shows
# this shell's PIDs), running PID, pid_in FILE [COMM], check_ifname NAME, link_kind IF.
: "${me:?set me before sourcing host-files.sh}"

fail() {
  echo "$me: $*" >&2
  exit 1
}
note() { echo "note: $*" >&2; }
changes=
changed() {
  changes="$changes|$*"
  echo "changed ${tag:+$tag: }$*"
}
ok() { echo "ok ${tag:+$tag: }$*"; }
gone() {
  changes="$changes|removed $*"
  echo "removed $*"
}

etc=${FORGEWAY_ETC:-/etc}
case $etc in
  /*) ;;
  *) fail "FORGEWAY_ETC must be an absolute path, not '$etc'" ;;
esac
case $etc in
  *[!A-Za-z0-9._/-]*) fail "FORGEWAY_ETC '$etc' has characters unit and cron files cannot quote" ;;
esac
systemd=${FORGEWAY_SYSTEMD:-auto}
case $systemd in
  auto | yes | no) ;;
  *) fail "FORGEWAY_SYSTEMD must be auto, yes or no, not '$systemd'" ;;
esac
case ${DOCKER_HOST:-} in
  *[!A-Za-z0-9._:/@+-]*) fail "DOCKER_HOST '$DOCKER_HOST' has characters the files forgeway writes cannot hold" ;;
esac
units=$etc/systemd/system
booted=no
[ ! -d /run/systemd/system ] || booted=yes # sd_booted(): systemd is PID 1
units_wanted=$systemd
[ "$units_wanted" != auto ] || units_wanted=$booted

tmp=$(mktemp -d "${TMPDIR:-/tmp}/forgeway-$me.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- files ---------------------------------------------------------------------------

created=
mkdirs() {
  [ -d "$1" ] && return 0
  mkdirs "$(dirname "$1")"
  mkdir -m 0755 "$1"
  created="$created$1
"
}

installed=no
install_file() {
  installed=no
  if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]; then
    [ "${say_ok:-no}" = no ] || ok "$2"
    return 0
  fi
  mkdirs "$(dirname "$2")"
  _new=$(mktemp "$(dirname "$2")/.forgeway.XXXXXX")
  cp "$1" "$_new"
  chmod "$3" "$_new"
  mv -f "$_new" "$2"
  installed=yes
  changed "$2"
}

remove() {
  for _f in "$@"; do
    if [ -e "$_f" ] || [ -L "$_f" ]; then
      rm -f "$_f"
      changed "removed $_f"
    fi
  done
}

save_dirs() {
  if [ -n "$created" ] || [ -f "$1" ]; then
    { [ ! -f "$1" ] || cat "$1"; printf '%s' "$created"; } | LC_ALL=C sort -u >"$tmp/dirs"
    if ! cmp -s "$tmp/dirs" "$1"; then
      cp "$tmp/dirs" "$1.forgeway-new"
      mv -f "$1.forgeway-new" "$1"
    fi
  fi
}

drop() { # drop PATH...: the regular files that exist (gone)
  for _f in "$@"; do
    if [ -f "$_f" ]; then
      rm -f "$_f"
      gone "$_f"
    fi
  done
}

drop_state_dir() { # drop_state_dir DIR: DIR and $etc/forgeway, each only when empty
  rmdir "$1" 2>/dev/null || true
  rmdir "$etc/forgeway" 2>/dev/null || true # only when no other part of forgeway uses it
}

remove_saved_dirs() { # the directories save_dirs listed in $1, deepest first, when empty
  [ -f "$1" ] || return 0
  _list=$(LC_ALL=C sort -r "$1")
  rm -f "$1"
  printf '%s\n' "$_list" | while read -r _d; do
    case $_d in
      /*) rmdir "$_d" 2>/dev/null || true ;; # one with files of others in it stays
    esac
  done
  changes="$changes|removed $1"
}

# --- units -----------------------------------------------------------------------------

enable_unit() { # enable_unit UNIT_FILE WANTS_DIR [NAME]: linked from WANTS_DIR as NAME (default: the
  # file's name; an instance name such as x@wg0.service for a template x@.service), as `systemctl enable` does
  _name=${3:-$(basename "$1")}
  _link=$2/$_name
  [ "$(readlink "$_link" 2>/dev/null || true)" != "$1" ] || return 0
  mkdirs "$2"
  rm -f "$_link"
  ln -s "$1" "$_link"
  changed "enabled $_name ($_link)"
}

install_unit() { # install_unit SRC UNIT_FILE WANTS_DIR: installed, enabled; systemd reloads when it changed
  install_file "$1" "$2" 0644
  enable_unit "$2" "$3"
  if [ "$booted" = yes ] && [ "$etc" = /etc ] && units_changed; then systemctl daemon-reload; fi
}

units_changed() { # a unit file or link under $units was written or removed by this run
  case $changes in *"|$units/"* | *"|removed $units/"* | *"|enabled "*) return 0 ;; esac
  return 1
}

remove_units() { # remove_units PATH...: unit files and links (gone); systemd reloads when any went
  _before=$changes
  for _f in "$@"; do
    if [ -e "$_f" ] || [ -L "$_f" ]; then
      rm -f "$_f"
      gone "$_f"
    fi
  done
  if [ "$changes" != "$_before" ] && [ "$booted" = yes ] && [ "$etc" = /etc ]; then systemctl daemon-reload; fi
}

# --- nftables: one table of ours, loaded from a saved file --------------------------------

nft_check_table() { # nft_check_table "FAMILY NAME" FILE: fail unless FILE holds only that table and passes nft -c
  # At the top level nothing but the table, its delete and its definition (comments and
  # blank lines aside): no `flush ruleset`, no other table.
  _stray=$(awk -v want="$1" '
    BEGIN { re = "^[ \t]*(table|delete table) " want "[ \t]*([{][ \t]*)?$" }
    { line = $0; sub(/#.*/, "", line) }
    depth == 0 && line !~ /^[ \t]*$/ && line !~ re { print NR ": " $0 }
    { n = gsub(/\{/, "{", line); m = gsub(/\}/, "}", line); depth += n - m }
  ' "$2")
  [ -z "$_stray" ] || fail "the ruleset may hold table $1 only; refused, nothing changed: $_stray"
  if ! _err=$(nft -c -f "$2" 2>&1); then
    fail "the ruleset does not pass nft -c; nothing changed: $_err"
  fi
}

read_ruleset() { # read_ruleset "FAMILY NAME" FILE RENDERER: stdin into FILE, checked (nft_check_table)
  cat >"$2"
  [ -s "$2" ] || fail "no ruleset on stdin (render it with $3)"
  nft_check_table "$1" "$2"
}

nft_load_table() { # nft_load_table "FAMILY NAME" FILE LIVE: nft -f FILE when just installed or drifted
  # Drifted: the live table is not what was loaded (gone after a reboot or a `flush
  # ruleset`, or edited by hand), compared stateless (`nft -s list table`).
  _have=$(nft -s list table "$1" 2>/dev/null) || _have="(no table)"
  if [ "$installed" = yes ] || ! [ -f "$3" ] || [ "$_have" != "$(cat "$3")" ]; then
    nft -f "$2"
    nft -s list table "$1" >"$3"
    changed "table $1 (nft -f $2)"
  else
    ok "table $1"
  fi
}

nft_sync_table() { # nft_sync_table "FAMILY NAME" FILE LIVE yes|no: a second table of FILE, after nft_load_table
  # yes: FILE defines it too, so nft_load_table's `nft -f` loaded it; loaded again (the whole
  # file, one transaction) only when it alone drifted. no: one left by an earlier run goes.
  if [ "$4" = yes ]; then
    _have=$(nft -s list table "$1" 2>/dev/null) || _have="(no table)"
    if [ "$installed" = yes ]; then
      nft -s list table "$1" >"$3"
    elif ! [ -f "$3" ] || [ "$_have" != "$(cat "$3")" ]; then
      nft -f "$2"
      nft -s list table "$1" >"$3"
      changed "table $1 (nft -f $2)"
    else
      ok "table $1"
    fi
  else
    rm -f "$3"
    if nft list table "$1" >/dev/null 2>&1; then
      nft delete table "$1"
      changed "removed table $1 (IPv6 forwarding is off)"
    fi
  fi
}

nft_boot_unit() { # nft_boot_unit UNIT WHAT FILE...: a unit that loads each FILE (nft -f) at boot
  # Like nftables.service: early, before anything brings up an interface, and after
  # whatever loads a ruleset with `flush ruleset`. Without systemd: a note (the caller's job).
  _unit=$1 _what=$2
  shift 2
  if [ "$units_wanted" != yes ]; then
    note "systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no): no boot unit installed. To keep" \
      "$_what after a reboot the caller runs at boot, before the network: $(printf 'nft -f %s; ' "$@")"
    return 0
  fi
  _nft=$(command -v nft)
  {
    echo "# forgeway: load $_what at boot, before the network."
    echo "# Written by $me.sh; its down script removes it."
    printf '%s\n' "[Unit]" "Description=forgeway $_what" "DefaultDependencies=no" "Wants=network-pre.target" \
      "Before=network-pre.target shutdown.target" "Conflicts=shutdown.target" \
      "After=local-fs.target nftables.service netfilter-persistent.service" "" \
      "[Service]" "Type=oneshot" "RemainAfterExit=yes"
    for _f in "$@"; do echo "ExecStart=$_nft -f $_f"; done
    printf '%s\n' "" "[Install]" "WantedBy=multi-user.target"
  } >"$tmp/$_unit"
  install_unit "$tmp/$_unit" "$units/$_unit" "$units/multi-user.target.wants"
}

restore_ipv6_sysctls() { # restore_ipv6_sysctls DIR: IPv6 forwarding and accept_ra as DIR's *.before files say
  if [ -f "$1/ipv6_forward.before" ]; then
    _prev=$(cat "$1/ipv6_forward.before")
    case $_prev in 0 | 1) ;; *) fail "$1/ipv6_forward.before holds '$_prev', not 0 or 1" ;; esac
    if [ "$(sysctl -n net.ipv6.conf.all.forwarding)" != "$_prev" ]; then
      sysctl -q -w net.ipv6.conf.all.forwarding="$_prev"
      gone "net.ipv6.conf.all.forwarding=1 (back to $_prev, as found before)"
    fi
    rm -f "$1/ipv6_forward.before"
  fi
  if [ -f "$1/accept_ra.before" ]; then
    read -r _if _ra <"$1/accept_ra.before" || true
    check_ifname "$_if"
    case $_ra in 0 | 1 | 2) ;; *) fail "$1/accept_ra.before holds '$_if $_ra', not an interface and 0-2" ;; esac
    if ipv6_conf_set "$_if" accept_ra "$_ra"; then
      gone "net.ipv6.conf.$_if.accept_ra=2 (back to $_ra, as found before)"
    fi
    rm -f "$1/accept_ra.before"
  fi
}

# --- IPv6 while forwarding: the default route from router advertisements kept -------------
# (forwarding-up.sh on the VPS's public interface, ipv6-ra-up.sh on a runner host's uplink)
# A forwarding interface ignores router advertisements unless its accept_ra is 2, and
# turning forwarding on drops the default routes learned from them (kernel
# rt6_purge_dflt_routers spares interfaces with accept_ra=2). Written through /proc, not
# `sysctl -w`: an interface name may hold dots (eth0.100), which sysctl's keys cannot.

ipv6_conf_set() { # ipv6_conf_set IF KEY VALUE: net.ipv6.conf.IF.KEY to VALUE when IF exists and it differs; false when nothing was written
  [ -f "/proc/sys/net/ipv6/conf/$1/$2" ] || return 1
  [ "$(cat "/proc/sys/net/ipv6/conf/$1/$2")" != "$3" ] || return 1
  echo "$3" >"/proc/sys/net/ipv6/conf/$1/$2" || fail "cannot set net.ipv6.conf.$1.$2=$3"
}

keep_ra() { # keep_ra IF WHY: accept_ra=2 on IF now ("changed ...=2 (WHY)", or "ok ...=2" when it is)
  [ -f "/proc/sys/net/ipv6/conf/$1/accept_ra" ] || fail "no interface $1: cannot keep its router advertisements"
  if ipv6_conf_set "$1" accept_ra 2; then
    changed "net.ipv6.conf.$1.accept_ra=2 ($2)"
  else
    ok "net.ipv6.conf.$1.accept_ra=2"
  fi
}

# --- docker ------------------------------------------------------------------------------

update_ca() { # rebuild the system trust store (only when FORGEWAY_ETC is /etc)
  if [ "$etc" != /etc ]; then
    note_out "FORGEWAY_ETC is $etc, not /etc: the system trust store is left alone (no update-ca-certificates)"
  elif ! command -v update-ca-certificates >/dev/null 2>&1; then
    note_out "update-ca-certificates is missing (apt-get install ca-certificates): the system trust store is not rebuilt"
  else
    _out=$(update-ca-certificates 2>&1) || fail "update-ca-certificates failed: $_out"
    changed "system trust store (update-ca-certificates)"
  fi
}

restart_docker() { # restart_docker ELSE: reload systemd and try-restart docker; else a note ending in ELSE
  _use=$systemd
  if [ "$_use" = auto ]; then
    _use=no
    [ "$booted" = no ] || [ "$etc" != /etc ] || _use=yes
  fi
  if [ "$_use" = yes ]; then
    systemctl daemon-reload || fail "systemctl daemon-reload failed"
    systemctl try-restart docker.service || fail "systemctl try-restart docker.service failed"
    changed "systemd reloaded, docker.service restarted (if it was running)"
  else
    note_out "systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no, or FORGEWAY_ETC is not /etc):" \
      "the caller must run 'systemctl daemon-reload && systemctl try-restart docker.service'," "$1"
  fi
}

note_out() { echo "note ${tag:+$tag: }$*"; } # a note on stdout, beside the changed and ok lines

wait_healthy() { # wait_healthy CONTAINER TIMEOUT: until its health check says healthy, or its test passes now, or fail
  _waited=0
  until [ "$(_health "$1" || true)" = healthy ] || _health_test_now "$1"; do
    [ "$_waited" -lt "$2" ] || fail "waited ${_waited}s for container $1 to report healthy (health: $(_health "$1" || echo 'no such container')); check 'docker logs $1'"
    sleep 5
    _waited=$((_waited + 5))
  done
}
_health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$1" </dev/null 2>/dev/null; }
# The container's own health test, run now: docker runs it once per interval only (a forge's
# is a minute), so a container that is ready would otherwise wait that long to say so.
_health_test_now() {
  _c=$1
  _kind=$(docker inspect -f '{{with .Config.Healthcheck}}{{index .Test 0}}{{end}}' "$_c" </dev/null 2>/dev/null) || return 1
  set --
  while IFS= read -r _a; do set -- "$@" "$_a"; done <<TEST
$(docker inspect -f '{{range $i, $a := .Config.Healthcheck.Test}}{{if $i}}{{$a}}{{"\n"}}{{end}}{{end}}' "$_c" </dev/null 2>/dev/null)
TEST
  case $_kind in
    CMD) [ $# -gt 0 ] && docker exec "$_c" "$@" >/dev/null 2>&1 </dev/null ;;
    CMD-SHELL) [ $# -eq 1 ] && docker exec "$_c" sh -c "$1" >/dev/null 2>&1 </dev/null ;;
    *) return 1 ;;
  esac
}

# --- processes and network links -----------------------------------------------------------

# /proc shows this shell's PIDs, except in a PID namespace without a /proc of its own
# (`read` is a builtin: /proc/self is this shell). Where it does not, kill -0 alone judges.
proc_ok=no
read -r _self 2>/dev/null </proc/self/stat || _self=
[ "${_self%% *}" != "$$" ] || proc_ok=yes

running() { # running PID: alive and, where /proc can tell, not a zombie waiting for its reaper
  kill -0 "$1" 2>/dev/null || return 1
  [ "$proc_ok" = yes ] || return 0
  read -r _s 2>/dev/null <"/proc/$1/stat" || return 1
  _s=${_s##*) }
  [ "${_s%% *}" != Z ]
}

pid_in() { # pid_in FILE [COMM]: the PID in FILE when that process runs (and, where /proc can tell, is COMM); else nothing
  [ -s "$1" ] || return 0
  read -r _p <"$1" || return 0
  case $_p in '' | *[!0-9]*) return 0 ;; esac
  running "$_p" || return 0
  if [ -n "${2:-}" ] && [ "$proc_ok" = yes ]; then
    read -r _c 2>/dev/null <"/proc/$_p/comm" || return 0
    [ "$_c" = "$2" ] || return 0
  fi
  echo "$_p"
}

check_ifname() { # check_ifname NAME: fail unless NAME is 1 to 15 of A-Z a-z 0-9 _ = + . - (not first -)
  case $1 in '' | -* | *[!A-Za-z0-9_=+.-]*) fail "bad interface name '$1'" ;; esac
  [ ${#1} -le 15 ] || fail "interface name '$1' is longer than 15 characters"
}

link_kind() { # link_kind IF: none, wireguard (a kernel WireGuard link), tun (wireguard-go's, say) or other
  _d=$(ip -d link show dev "$1" 2>/dev/null) || {
    echo none
    return 0
  }
  _d=$(printf '%s\n' "$_d" | sed 1d)
  if printf '%s\n' "$_d" | grep -qw wireguard; then
    echo wireguard
  elif printf '%s\n' "$_d" | grep -q '^ *tun '; then
    echo tun
  else
    echo other
  fi
}

# --- timers: a service on a calendar, by systemd or cron -------------------------------------

check_calendar() { # check_calendar CALENDAR [LABEL]: fail unless an OnCalendar (LABEL names it, default ON_CALENDAR)
  case $1 in
    '' | *[!A-Za-z0-9\ *:/,.~+-]*) fail "${2:-ON_CALENDAR} '$1' has characters OnCalendar does not use" ;;
  esac
  command -v systemd-analyze >/dev/null 2>&1 || return 0
  _err=$(systemd-analyze calendar "$1" 2>&1) ||
    fail "${2:-ON_CALENDAR} '$1' is not a systemd calendar: $(printf '%s' "$_err" | tail -n 1)"
}


cron_fields() { # cron_fields CALENDAR: its cron time fields, or nothing when cron cannot say it
  # Names cron knows, then (from `systemd-analyze calendar`'s normalized form)
  # "*-MM-DD HH:MM:00" with each field *, a number or start/step: no weekday, any year.
  case $1 in
    minutely) echo '* * * * *' && return 0 ;;
    hourly) echo '0 * * * *' && return 0 ;;
    daily) echo '0 0 * * *' && return 0 ;;
    weekly) echo '0 0 * * 1' && return 0 ;;
    monthly) echo '0 0 1 * *' && return 0 ;;
    quarterly) echo '0 0 1 1,4,7,10 *' && return 0 ;;
    semiannually) echo '0 0 1 1,7 *' && return 0 ;;
    yearly | annually) echo '0 0 1 1 *' && return 0 ;;
  esac
  command -v systemd-analyze >/dev/null 2>&1 || return 0
  _norm=$(systemd-analyze calendar "$1" 2>/dev/null | sed -n 's/^ *Normalized form: //p') || return 0
  printf '%s\n' "$_norm" | awk '
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

# install_timer NAME CALENDAR EXEC DESCRIPTION DELAY TIMEOUT FALLBACK [SETTING...]
# Runs EXEC as root on CALENDAR, and converges: a second run with the same arguments
# changes nothing (and prints nothing); other arguments rewrite only what differs.
#   NAME         [A-Za-z0-9_.-]: the files are $units/NAME.service (oneshot, ExecStart=EXEC),
#                $units/NAME.timer and its link in $units/timers.target.wants; or $etc/cron.d/NAME
#   CALENDAR     a systemd OnCalendar (check_calendar it first, before anything changes)
#   EXEC         absolute path of the program, no arguments ([A-Za-z0-9._/-]); not checked to exist
#   DESCRIPTION  one line: the service's Description= and the files' first comment
#   DELAY        RandomizedDelaySec in minutes (cron: none)
#   TIMEOUT      minutes a run may take (TimeoutStartSec; cron: `timeout`); 0: no limit
#   FALLBACK     cron time fields for a CALENDAR cron cannot say (cron_fields); a note says so
#   SETTING      a unit line KEY=VALUE: After=, Wants=, Requires= go to [Unit], others to [Service]
# units_wanted=yes: the units, the timer enabled; when booted with FORGEWAY_ETC=/etc,
# systemd reloads (only when a unit changed) and the timer starts (restarts when its file
# changed); otherwise a note says they are installed, not started. units_wanted=no: the
# cron file, its output to `logger -t NAME` where logger is installed. Either way the other
# way's files go (the timer stopped first), so switching FORGEWAY_SYSTEMD converges too.
# Directories it makes are in $created (save_dirs). remove_timer NAME undoes exactly this;
# with nothing there it changes nothing and succeeds.
install_timer() {
  [ $# -ge 7 ] || fail "install_timer NAME CALENDAR EXEC DESCRIPTION DELAY TIMEOUT FALLBACK [SETTING...]: got $#"
  case $1 in '' | *[!A-Za-z0-9_.-]*) fail "timer name '$1': expected [A-Za-z0-9_.-]" ;; esac
  case $3 in /*) ;; *) fail "timer $1: EXEC '$3' is not an absolute path" ;; esac
  case $3 in *[!A-Za-z0-9._/-]*) fail "timer $1: EXEC '$3' has characters other than [A-Za-z0-9._/-]" ;; esac
  case $4 in *"
"*) fail "timer $1: DESCRIPTION of more than one line" ;; esac
  case $5 in '' | *[!0-9]*) fail "timer $1: DELAY '$5' is not a number of minutes" ;; esac
  case $6 in '' | *[!0-9]*) fail "timer $1: TIMEOUT '$6' is not a number of minutes" ;; esac
  case $7 in '' | *[!0-9*,/\ -]*) fail "timer $1: FALLBACK '$7' is not cron time fields" ;; esac
  check_calendar "$2" "timer $1: OnCalendar"
  _i=0
  for _s in "$@"; do
    _i=$((_i + 1))
    [ "$_i" -gt 7 ] || continue
    case $_s in
      *"
"*) fail "timer $1: SETTING of more than one line: '$_s'" ;;
      [A-Za-z]*=*) ;;
      *) fail "timer $1: SETTING '$_s' is not KEY=VALUE" ;;
    esac
  done
  _timer_before=$changes
  if [ "$units_wanted" = yes ]; then
    _timer_units "$@"
    drop "$etc/cron.d/$1"
    if _timer_systemctl; then
      if ! systemctl is-active --quiet "$1.timer"; then
        systemctl start "$1.timer"
        changed "started $1.timer"
      elif [ "$_timer_new" = yes ]; then # a running timer keeps its old calendar until restarted
        systemctl restart "$1.timer"
        changed "restarted $1.timer"
      fi
    elif [ "$changes" != "$_timer_before" ]; then
      note_out "systemd is not running here (or FORGEWAY_ETC is not /etc): $1.timer is installed, not started"
    fi
  else
    _timer_cron "$@"
    _drop_timer_units "$1"
  fi
}

remove_timer() { # remove_timer NAME: what install_timer NAME made, the timer stopped first
  _drop_timer_units "$1"
  drop "$etc/cron.d/$1"
}

_timer_systemctl() { [ "$booted" = yes ] && [ "$etc" = /etc ] && command -v systemctl >/dev/null 2>&1; }

_timer_units() { # install_timer's arguments: the service and the timer, enabled
  _n=$1 _cal=$2 _exec=$3 _desc=$4 _delay=$5 _timeout=$6
  shift 7
  {
    echo "# forgeway: $_desc ($me.sh)"
    echo "[Unit]"
    echo "Description=forgeway: $(printf '%s' "$_desc" | sed 's/%/%%/g')" # % starts a specifier
    for _s in "$@"; do case $_s in After=* | Wants=* | Requires=*) echo "$_s" ;; esac; done
    echo
    echo "[Service]"
    echo "Type=oneshot"
    echo "ExecStart=\"$_exec\""
    [ "$_timeout" = 0 ] || echo "TimeoutStartSec=${_timeout}min"
    for _s in "$@"; do case $_s in After=* | Wants=* | Requires=*) ;; *) echo "$_s" ;; esac; done
  } >"$tmp/$_n.service"
  cat >"$tmp/$_n.timer" <<EOF
# forgeway: timer of $_n.service ($me.sh)
[Unit]
Description=forgeway: timer of $_n.service ($_cal)

[Timer]
OnCalendar=$_cal
Persistent=true
RandomizedDelaySec=${_delay}min

[Install]
WantedBy=timers.target
EOF
  install_file "$tmp/$_n.service" "$units/$_n.service" 0644
  install_unit "$tmp/$_n.timer" "$units/$_n.timer" "$units/timers.target.wants"
  _timer_new=$installed
}

_timer_cron() { # install_timer's arguments: the cron file
  _schedule=$(cron_fields "$2")
  if [ -z "$_schedule" ]; then
    _schedule=$7
    note_out "cron cannot say OnCalendar '$2': $1 runs at '$7' (cron's time fields) instead"
  fi
  _run="'$3'"
  [ "$6" = 0 ] || _run="timeout ${6}m $_run"
  if command -v logger >/dev/null 2>&1; then _run="$_run 2>&1 | logger -t $1"; fi
  cat >"$tmp/$1.cron" <<EOF
# forgeway: $4 ($me.sh)
# OnCalendar=$2
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$_schedule root $_run
EOF
  install_file "$tmp/$1.cron" "$etc/cron.d/$1" 0644
  if [ "$etc" = /etc ] && ! command -v cron >/dev/null 2>&1 && ! command -v crond >/dev/null 2>&1; then
    note_out "no cron daemon is installed (apt-get install cron): nothing runs $etc/cron.d/$1"
  fi
}

_drop_timer_units() { # NAME: the timer stopped (when systemd runs it), the units and the link removed
  _wants=$units/timers.target.wants/$1.timer
  [ -e "$units/$1.timer" ] || [ -e "$units/$1.service" ] || [ -L "$_wants" ] || return 0
  if _timer_systemctl && systemctl is-active --quiet "$1.timer"; then
    systemctl stop "$1.timer"
    changed "stopped $1.timer"
  fi
  remove_units "$_wants" "$units/$1.timer" "$units/$1.service"
  ! _timer_systemctl || systemctl reset-failed "$1.service" "$1.timer" >/dev/null 2>&1 || true
}

# A timed job's run (forgeway-backup, forgeway-registry-gc): its settings, one run at a
# time, and a status file that says "running" from the start and the result at the end.
#   job_setting KEY      the last KEY= line of $home/settings
#   job_docker_host      DOCKER_HOST from the settings, unless the environment sets it
#   job_lock STATE WHAT  flock on STATE/lock; a second run exits 0 at once, saying so
#   job_begin            started, t0, result=running, error, finished (then the job's own
#                        write_status, which writes its fields and "duration_seconds": $(job_duration))
#   job_traps NOTE [CLEANUP]  on exit: CLEANUP, then a run still "running" is recorded
#                        failed (status written, FAILED on stderr, non-zero exit); a signal
#                        ends it as 143 with NOTE as the error
#   job_fail MESSAGE     MESSAGE (one line, 400 characters at most) as the error, exit 1
#   now, json STRING (a JSON string, or null for nothing), json_number N, last FILE (its
#   last three lines as one)
job_setting() { sed -n "s/^$1=//p" "${home:?set home before job_setting}/settings" | tail -n 1; }
job_docker_host() {
  if [ -z "${DOCKER_HOST:-}" ] && [ -n "$(job_setting DOCKER_HOST)" ]; then
    DOCKER_HOST=$(job_setting DOCKER_HOST)
    export DOCKER_HOST
  fi
}
job_lock() {
  exec 9>"$1/lock"
  if ! flock -n 9; then
    echo "$me: $2 is already running (lock $1/lock): this run does nothing"
    exit 0
  fi
}
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
json() {
  if [ -z "$1" ]; then echo null; else printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"; fi
}
json_number() { if [ -z "$1" ]; then echo null; else echo "$1"; fi; }
last() { tail -n 3 "$1" | tr '\n' ' ' | sed 's/ *$//'; }
job_begin() {
  # shellcheck disable=SC2034 # started and finished: the job's write_status reads them
  started=$(now)
  t0=$(date +%s.%N)
  error='' result=running finished=''
}
job_duration() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
_job_finish() {
  _code=$?
  ${_job_cleanup:-:}
  rm -rf "$tmp"
  if [ "$result" = running ]; then
    result=failed
    # shellcheck disable=SC2034 # the job's write_status reads it
    finished=$(now)
    [ -n "$error" ] || error="stopped (exit status $_code) before it finished"
    write_status
    echo "$me: FAILED: $error" >&2
    [ "$_code" -ne 0 ] || _code=1
  fi
  exit "$_code"
}
job_traps() { # replaces host-files.sh's own EXIT trap (it removes $tmp too)
  _job_signal_note=$1 _job_cleanup=${2:-}
  trap _job_finish EXIT
  trap 'error=$_job_signal_note; exit 143' INT TERM HUP
}
job_fail() {
  error=$(printf '%s' "$*" | tr '\n' ' ' | cut -c1-400)
  exit 1
}
