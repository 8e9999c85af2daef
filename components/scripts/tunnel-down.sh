#!/bin/sh
# Remove what tunnel-up.sh added for WireGuard interface IF: its boot units, the
# endpoint memory (its watch: the unit, or the --watch process by PID file; its file), the
# wireguard-go process (by its PID file), the interface (with its address and routes),
# the saved key, config and settings, the PID file and log. Succeeds when all of that
# is already gone, printing "ok IF: nothing to remove".
#
#   tunnel-down.sh IF
#
# Shared things go with the last interface: the unit templates and the saved copy of
# tunnel-up.sh. Left on purpose: /run/wireguard (wireguard-go's own directory).
# Environment: FORGEWAY_ETC, FORGEWAY_RUN, FORGEWAY_WG_SOCKET_DIR, as tunnel-up.sh.
set -eu
me=tunnel-down tag=
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 1 ] || fail "usage: tunnel-down.sh IF"
if=$1
check_ifname "$if"
tag=$if

run=${FORGEWAY_RUN:-/run/forgeway}
sockets=${FORGEWAY_WG_SOCKET_DIR:-/run/wireguard}
state=$etc/forgeway/wireguard
pidfile=$run/$if.pid
watchpid=$run/$if.watch.pid
if [ "$etc" = /etc ]; then lib=/var/lib/forgeway; else lib=$etc/forgeway/var; fi
svc=forgeway-tunnel@$if.service
timer=forgeway-tunnel-reresolve@$if.timer
watch_unit=forgeway-tunnel-watch@$if.service

# --- units first, so nothing brings the tunnel back ---------------------------------------

if [ "$booted" = yes ] && command -v systemctl >/dev/null; then
  for u in "$timer" "$watch_unit" "$svc"; do
    if systemctl is-active --quiet "$u"; then
      systemctl stop "$u" # stopping the service also stops a wireguard-go it started
      gone "$if: stopped $u"
    fi
  done
fi
remove_units "$units/timers.target.wants/$timer" "$units/multi-user.target.wants/$watch_unit" \
  "$units/multi-user.target.wants/$svc"

# --- the wireguard-go process and the interface ---------------------------------------------

# stop PID WHAT GROUP: SIGTERM (to the session PID leads when GROUP is yes), up to 5 s
# for it to go, then SIGKILL. Only called for a process that is ours for sure.
stop() {
  if [ "$3" = yes ]; then kill -- "-$1" 2>/dev/null || kill "$1"; else kill "$1"; fi
  _i=0
  while running "$1" && [ "$_i" -lt 100 ]; do
    _i=$((_i + 1))
    sleep 0.05
  done
  ! running "$1" || kill -9 "$1" 2>/dev/null || true
  gone "$if: stopped $2 (pid $1)"
}

# The endpoint memory's watch started without systemd: the session it leads (sh and its
# sleep), when ours for sure.
pid=$(pid_in "$watchpid")
if [ -n "$pid" ]; then
  if [ "$proc_ok" = no ] || tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "tunnel-up.sh --watch $if "; then
    stop "$pid" "the endpoint memory" yes
  fi
fi

kind=$(link_kind "$if")
# Kill only a process that is ours for sure: wireguard-go by /proc (pid_in checks its
# name), or, where /proc cannot tell (another PID namespace), one whose tun device still
# exists: the device dies with the process, so its PID cannot have been reused.
pid=$(pid_in "$pidfile" wireguard-go)
if [ -n "$pid" ] && { [ "$proc_ok" = yes ] || [ "$kind" = tun ]; }; then
  stop "$pid" wireguard-go no
fi
case $(link_kind "$if") in
  wireguard | tun)
    ip link delete dev "$if"
    gone "$if: interface"
    ;;
  other) note "$if is not a WireGuard interface: left alone" ;;
  none) ;;
esac
remove "$pidfile" "$watchpid" "$run/$if.log" "$sockets/$if.sock" "$lib/wireguard/$if.endpoints"

# --- saved files; shared ones with the last interface -------------------------------------------

remove "$state/$if.key" "$state/$if.conf" "$state/$if.env"
if [ -z "$(find "$state" -maxdepth 1 -name '*.conf' 2>/dev/null)" ]; then
  remove "$state/tunnel-up.sh"
fi
if [ -z "$(find "$units/multi-user.target.wants" -name 'forgeway-tunnel@*' 2>/dev/null)" ]; then
  remove_units "$units/forgeway-tunnel@.service"
fi
if [ -z "$(find "$units/multi-user.target.wants" -name 'forgeway-tunnel-watch@*' 2>/dev/null)" ]; then
  remove_units "$units/forgeway-tunnel-watch@.service"
fi
if [ -z "$(find "$units/timers.target.wants" -name 'forgeway-tunnel-reresolve@*' 2>/dev/null)" ]; then
  remove_units "$units/forgeway-tunnel-reresolve@.service" "$units/forgeway-tunnel-reresolve@.timer"
fi
# Directories tunnel-up.sh made, when empty (what else uses them keeps them).
for d in "$state" "$lib/wireguard" "$lib" "$etc/forgeway" "$units/timers.target.wants" "$units/multi-user.target.wants" "$sockets" "$run"; do
  case $d in /run/wireguard | /var/run/wireguard) continue ;; esac
  if [ -d "$d" ] && rmdir "$d" 2>/dev/null; then gone "$d/"; fi
done

[ -n "$changes" ] || ok "nothing to remove"
