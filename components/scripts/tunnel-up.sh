#!/bin/sh
# (Over 400 lines on purpose: deploy, boot, re-resolve and watch share one saved state
# (IF.conf, IF.env, the key, the endpoints file) and the boot unit runs a saved copy of
# this one file on a host with nothing else of forgeway's.)
# Converge the forgeway WireGuard interface IF: safe to run any number of times; a
# run that finds everything as wanted changes nothing and prints "ok IF: ...".
#
#   tunnel-up.sh IF DIR  <KEY   deploy: save DIR/IF.conf and DIR/IF.env (rendered by
#                               components/render/wgconf.py) and the private key read
#                               from stdin (never argv), install the boot units, converge
#   tunnel-up.sh --boot IF      boot: converge from the saved files (the unit runs this)
#   tunnel-up.sh --reresolve IF set DNS-name endpoints again on peers without an
#                               endpoint or a recent handshake (the timer runs this)
#   tunnel-up.sh --watch IF     endpoint memory: save the endpoints learned from peers
#                               (forgeway-tunnel-watch@IF.service runs this; without
#                               systemd, deploy and boot runs start it in the background)
#   tunnel-up.sh --save IF      save them once (the boot unit's ExecStop)
#
# What it converges: the interface (kernel `ip link add IF type wireguard` where that
# works, else a wireguard-go process, per IMPLEMENTATION in IF.env: auto, kernel or
# wireguard-go), its peers and private key (one `wg setconf`, the key through a pipe),
# address, MTU, link up, extra routes. The private key is never in argv, output or logs.
#
# Endpoint memory (the VPS): peers without an Endpoint in IF.conf sit behind NAT and
# are found only by their packets, and a VPS that restarts loses where they are: it
# cannot start a handshake, and drops their packets for the sessions it forgot (see
# docs/tunnel.md). So a watch (--watch, PID in $FORGEWAY_RUN/IF.watch.pid: the unit
# forgeway-tunnel-watch@IF.service where systemd is PID 1, else a background process)
# reads their endpoints every 2 s and rewrites IF.endpoints under /var/lib/forgeway
# /wireguard when they change (so a crash loses at most 2 s of roaming); the boot unit
# saves once more when stopped. When such a peer has no endpoint on the interface
# (after a reboot), this script sets the saved one and starts a handshake to it at
# once: persistent-keepalive switched on and off again sends one keepalive, which
# without a session is a handshake initiation (wireguard-go device/uapi.go pkaOn,
# linux drivers/net/wireguard/netlink.c set_peer). A stale endpoint (the NAT gave the
# peer a new port meanwhile) costs only handshake packets to the old address; the
# peer's own next handshake sets the right one. Nothing of this is on the path of a
# packet.
#
# Boot: when systemd is PID 1, forgeway-tunnel@IF.service runs --boot; when IF.conf
# has a DNS-name endpoint, forgeway-tunnel-reresolve@IF.timer runs --reresolve every
# 30 s (for a name that did not resolve at boot, or a VPS that moved). Without systemd
# the script says so and the caller makes the tunnel survive a reboot (--boot at boot).
# The units run a saved copy of this script: DIR/tunnel-up.sh, or $0 when run from a
# file; run inline (sh -c), put the script in DIR.
#
# Environment (the defaults are for real hosts; tests and lab hosts that share one
# filesystem override them):
#   FORGEWAY_ETC=/etc              saved files in $FORGEWAY_ETC/forgeway/wireguard,
#                                  units in $FORGEWAY_ETC/systemd/system
#   FORGEWAY_RUN=/run/forgeway     wireguard-go PID file and log
#   FORGEWAY_WG_SOCKET_DIR=/run/wireguard
#                                  wireguard-go's control sockets. wg and wireguard-go
#                                  look only in /run/wireguard (compiled in), so another
#                                  directory is bind-mounted there, in a private mount
#                                  namespace, around each call: two netns, two wg0
#   FORGEWAY_SYSTEMD=auto|yes|no   install boot units (auto: when systemd is PID 1)
# (host-files.sh, inlined, checks them and gives fail, changed, install_file, the units
# and the PID helpers.)
# The endpoint memory is in /var/lib/forgeway/wireguard, or in
# $FORGEWAY_ETC/forgeway/var when FORGEWAY_ETC is not /etc (a lab host on this machine's
# filesystem must not write the real /var/lib).
set -eu
me=tunnel-up tag=
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

mode=deploy
case ${1:-} in
  --boot) mode=boot && shift ;;
  --reresolve) mode=reresolve && shift ;;
  --watch) mode=watch && shift ;;
  --save) mode=save && shift ;;
esac
[ $# -ge 1 ] || fail "usage: tunnel-up.sh IF DIR <KEY | --boot IF | --reresolve IF | --watch IF | --save IF"
if=$1
check_ifname "$if"
tag=$if

run=${FORGEWAY_RUN:-/run/forgeway}
sockets=${FORGEWAY_WG_SOCKET_DIR:-/run/wireguard}
state=$etc/forgeway/wireguard
conf=$state/$if.conf
env=$state/$if.env
key=$state/$if.key
pidfile=$run/$if.pid
log=$run/$if.log
svc=forgeway-tunnel@$if.service
if [ "$etc" = /etc ]; then lib=/var/lib/forgeway; else lib=$etc/forgeway/var; fi
memory=$lib/wireguard/$if.endpoints
watchpid=$run/$if.watch.pid
timer=forgeway-tunnel-reresolve@$if.timer
watch_unit=forgeway-tunnel-watch@$if.service
umask 077 # the key file and every temporary file are created 0600

# Run wg or wireguard-go seeing $sockets as /run/wireguard ($0: the directory).
# shellcheck disable=SC2016 # expanded by the inner sh
BIND='mount --bind "$0" /run/wireguard && exec "$@"'
socket_dirs() {
  mkdir -p "$sockets"
  [ -d /run/wireguard ] || mkdir -m 0755 /run/wireguard # the mount point (wireguard-go's own directory)
}
wgx() {
  case $sockets in
    /run/wireguard | /var/run/wireguard) "$@" ;;
    *)
      socket_dirs
      unshare -m sh -c "$BIND" "$sockets" "$@"
      ;;
  esac
}

setting() { sed -n "s/^$1=//p" "$env" | tail -n 1; }

# "Key = value" lines of the wg setconf format (values may end in "=", as keys do).
# shellcheck disable=SC2016 # awk code
AWK_KV='{ k = $0; sub(/[ \t]*=.*/, "", k); v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+$/, "", v) }'

# DNS-name endpoints of the saved config: "PUBLICKEY HOST:PORT" lines.
name_endpoints() {
  awk "$AWK_KV"'
    /^\[/ { pk = "" }
    k == "PublicKey" { pk = v }
    k == "Endpoint" && pk != "" && v !~ /^\[/ && v !~ /^[0-9.]+:[0-9]+$/ { print pk, v }
  ' "$conf"
}

# Public keys of the peers without an Endpoint in the saved config: they are found by
# their packets only (the VPS's peers behind NAT), so their endpoints are remembered.
learned_peers() {
  awk "$AWK_KV"'
    function flush() { if (pk != "" && !ep) print pk }
    /^\[/ { flush(); pk = ""; ep = 0 }
    k == "PublicKey" { pk = v }
    k == "Endpoint" { ep = 1 }
    END { flush() }
  ' "$conf"
}

# Write the live endpoints of learned peers to $memory when they differ from it
# ("PUBLICKEY ENDPOINT" lines, sorted; 0600, replaced atomically). None live (a fresh
# interface before any handshake): the file is kept as it is. No temporary file: the
# watch runs this every 2 s.
save_endpoints() {
  _live=$(wgx wg show "$if" endpoints | awk -v want="$(learned_peers)" '
    BEGIN { n = split(want, a, "\n"); for (i = 1; i <= n; i++) w[a[i]] = 1 }
    ($1 in w) && $2 != "(none)" { print $1, $2 }
  ' | sort)
  [ -n "$_live" ] || return 0
  [ "$_live" != "$(cat "$memory" 2>/dev/null)" ] || return 0
  mkdir -p "$lib/wireguard"
  printf '%s\n' "$_live" >"$memory.new"
  mv -f "$memory.new" "$memory"
}

# The PID in the watch PID file if that process runs and (where /proc can tell) is this
# script's --watch; else nothing.
watch_pid() {
  _w=$(pid_in "$watchpid")
  [ -n "$_w" ] || return 0
  if [ "$proc_ok" = yes ]; then
    tr '\0' ' ' 2>/dev/null <"/proc/$_w/cmdline" | grep -qF "tunnel-up.sh --watch $if " || return 0
  fi
  echo "$_w"
}

# The state the saved config asks for, one fact a line, sorted, to compare with
# live_state. Endpoints are left out: they roam, and names resolve.
wanted_state() {
  awk "$AWK_KV"'
    function flush() { if (pk != "") print pk, "keepalive", (ka == "" ? "off" : ka) }
    /^\[Interface\]/ { flush(); pk = ""; sec = "i" }
    /^\[Peer\]/ { flush(); pk = ""; ka = ""; sec = "p" }
    sec == "i" && k == "ListenPort" { print "listen-port", v }
    sec == "p" && k == "PublicKey" { pk = v }
    sec == "p" && k == "AllowedIPs" { n = split(v, a, /[ \t]*,[ \t]*/); for (i = 1; i <= n; i++) print pk, "allowed", a[i] }
    sec == "p" && k == "PersistentKeepalive" { ka = v }
    END { flush() }
  ' "$conf" | sort
}

live_state() { # $1: yes when the config sets ListenPort
  # `wg show dump` starts with the private key: it stays in this pipe, awk drops it.
  wgx wg show "$if" dump | awk -F'\t' -v port="$1" '
    NR == 1 { if (port == "yes") print "listen-port", $3; next }
    $4 != "(none)" { n = split($4, a, ","); for (i = 1; i <= n; i++) print $1, "allowed", a[i] }
    { print $1, "keepalive", $8 }
  ' | sort
}

# --- deploy: save the rendered files and the key ---------------------------------------

if [ "$mode" = deploy ]; then
  [ $# -eq 2 ] || fail "usage: tunnel-up.sh IF DIR <KEY"
  dir=$2
  for f in "$dir/$if.conf" "$dir/$if.env"; do
    [ -f "$f" ] || fail "$f is missing (rendered by components/render/wgconf.py)"
  done
  if grep -qi '^[[:space:]]*PrivateKey' "$dir/$if.conf"; then
    fail "$dir/$if.conf has a PrivateKey line: the private key goes on stdin only"
  fi
  mkdirs "$etc/forgeway"
  mkdir -p "$state"
  chmod 0700 "$state"
  # stdin -> a 0600 file in the run's private $tmp, whitespace stripped; checked by deriving
  # its public key, then installed beside the config (0600, replaced atomically).
  { tr -d ' \t\r\n' && echo; } >"$tmp/key"
  wg pubkey <"$tmp/key" >/dev/null 2>&1 ||
    fail "stdin is not a WireGuard private key (44 characters of base64, as \`wg genkey\` prints)"
  install_file "$tmp/key" "$key" 0600
  install_file "$dir/$if.conf" "$conf" 0600
  install_file "$dir/$if.env" "$env" 0600
  if [ -f "$dir/tunnel-up.sh" ]; then
    install_file "$dir/tunnel-up.sh" "$state/tunnel-up.sh" 0700
  else
    case $0 in */tunnel-up.sh) install_file "$0" "$state/tunnel-up.sh" 0700 ;; esac
  fi
else
  [ $# -eq 1 ] || fail "usage: tunnel-up.sh --$mode IF"
fi
for f in "$conf" "$env" "$key"; do
  [ -f "$f" ] || fail "$f is missing: run tunnel-up.sh $if DIR <KEY first"
done

# --- reresolve: DNS-name endpoints only ----------------------------------------------------

if [ "$mode" = reresolve ]; then
  export WG_ENDPOINT_RESOLUTION_RETRIES="${WG_ENDPOINT_RESOLUTION_RETRIES:-2}"
  now=$(date +%s)
  name_endpoints >"$tmp/names"
  while read -r pk endpoint; do
    live=$(wgx wg show "$if" dump | awk -F'\t' -v pk="$pk" 'NR > 1 && $1 == pk { print $3, $5 }')
    [ -n "$live" ] || continue
    # As wireguard-tools' contrib/reresolve-dns: leave a peer with a recent handshake alone.
    if [ "${live%% *}" != "(none)" ] && [ $((now - ${live##* })) -lt 135 ]; then continue; fi
    if wgx wg set "$if" peer "$pk" endpoint "$endpoint"; then
      changed "endpoint $endpoint"
    else
      note "$endpoint does not resolve yet; the next run tries again"
    fi
  done <"$tmp/names"
  exit 0
fi

# --- endpoint memory: save once, or keep saving -------------------------------------------------

if [ "$mode" = save ]; then
  save_endpoints
  exit 0
fi
if [ "$mode" = watch ]; then
  rm -rf "$tmp" && tmp= # no scratch directory of the watch's while it runs
  trap 'exit 0' TERM INT HUP
  mkdir -p "$run"
  echo "$$" >"$watchpid"
  # A watch whose PID file is gone or names another (/run emptied: a reboot as the lab
  # simulates it, or tunnel-down.sh) stops by itself.
  while [ "$(cat "$watchpid" 2>/dev/null)" = "$$" ]; do
    save_endpoints || note "could not save the endpoints of $if; trying again"
    sleep 2
  done
  exit 0
fi

# --- the interface ---------------------------------------------------------------------------

impl=$(setting IMPLEMENTATION)
case ${impl:=auto} in
  auto | kernel | wireguard-go) ;;
  *) fail "$env: IMPLEMENTATION=$impl is not auto, kernel or wireguard-go" ;;
esac
address=$(setting ADDRESS)
address6=$(setting ADDRESS6) # dual-stack tunnels only (tunnel.ipv6)
mtu=$(setting MTU)
routes=$(setting ROUTES | tr ',' ' ')
[ -n "$address" ] || fail "$env: ADDRESS is empty"
case $mtu in '' | *[!0-9]*) fail "$env: MTU=$mtu is not a number" ;; esac

start_wireguard_go() {
  command -v wireguard-go >/dev/null ||
    fail "no WireGuard kernel module and no wireguard-go: apt-get install wireguard-go"
  mkdir -p "$run"
  rm -f "$sockets/$if.sock" # left by a killed process
  # Foreground (-f) in the background, in a session of its own: $! is its PID (setsid
  # does not fork: this child leads no process group; unshare without --fork execs).
  # Output goes to a log so that a remote shell's stdout is not held open.
  case $sockets in
    /run/wireguard | /var/run/wireguard)
      setsid wireguard-go -f "$if" </dev/null >>"$log" 2>&1 &
      ;;
    *)
      socket_dirs
      setsid unshare -m sh -c "$BIND" "$sockets" wireguard-go -f "$if" </dev/null >>"$log" 2>&1 &
      ;;
  esac
  _pid=$!
  echo "$_pid" >"$pidfile"
  _i=0
  until [ -S "$sockets/$if.sock" ] && ip link show dev "$if" >/dev/null 2>&1; do
    kill -0 "$_pid" 2>/dev/null || fail "wireguard-go $if exited: $(tail -n 5 "$log")"
    _i=$((_i + 1))
    [ "$_i" -le 100 ] || fail "wireguard-go $if did not come up in 10 s: $(tail -n 5 "$log")"
    sleep 0.1
  done
  changed "created (wireguard-go, pid $_pid)"
}

kind=$(link_kind "$if")
pid=$(pid_in "$pidfile" wireguard-go)
case $kind in
  other) fail "$if exists and is not a WireGuard interface; remove it or choose another name" ;;
  tun)
    [ -n "$pid" ] || fail "$if is a tun device but no wireguard-go of ours runs it ($pidfile): run tunnel-down.sh $if"
    [ "$impl" != kernel ] || fail "$if runs on wireguard-go but IMPLEMENTATION=kernel: run tunnel-down.sh $if first"
    ;;
  wireguard)
    [ "$impl" != wireguard-go ] ||
      fail "$if is a kernel interface but IMPLEMENTATION=wireguard-go: run tunnel-down.sh $if first"
    ;;
  none)
    [ -z "$pid" ] || kill "$pid" # alive without its interface: start afresh
    rm -f "$pidfile"
    if [ "$impl" != wireguard-go ] && ip link add "$if" type wireguard 2>/dev/null; then
      changed "created (kernel)"
    elif [ "$impl" = kernel ]; then
      fail "IMPLEMENTATION=kernel, but \`ip link add $if type wireguard\` fails here (no wireguard module)"
    else
      start_wireguard_go
    fi
    ;;
esac

# --- peers and private key -------------------------------------------------------------------

# CONF with "PrivateKey = <the key file>" added to [Interface], on stdout (a pipe to
# wg setconf: all in one step, as `wg setconf` drops a private key it is not given).
with_key() {
  awk -v keyfile="$key" '
    { print }
    /^\[Interface\]/ && !done { getline k <keyfile; print "PrivateKey = " k; done = 1 }
  ' "$1"
}

unresolved=no
port=no
! grep -q '^ListenPort' "$conf" || port=yes
wanted_state >"$tmp/want"
live_state "$port" >"$tmp/have"
if [ "$(wgx wg show "$if" public-key)" != "$(wg pubkey <"$key")" ] || ! cmp -s "$tmp/want" "$tmp/have"; then
  [ "$mode" != boot ] || export WG_ENDPOINT_RESOLUTION_RETRIES="${WG_ENDPOINT_RESOLUTION_RETRIES:-3}"
  if ! with_key "$conf" | wgx wg setconf "$if" /dev/stdin; then
    # Most likely a DNS-name endpoint that does not resolve (yet): apply the rest. At
    # boot the reresolve timer sets the endpoint later; at deploy time it is an error.
    name_endpoints | awk '{ print $2 }' >"$tmp/names"
    awk 'NR == FNR { skip["Endpoint = " $0] = 1; next } !($0 in skip)' "$tmp/names" "$conf" >"$tmp/conf"
    with_key "$tmp/conf" | wgx wg setconf "$if" /dev/stdin || fail "wg setconf $if $conf failed"
    names=$(tr '\n' ' ' <"$tmp/names")
    unresolved=yes
    [ "$mode" = boot ] || fail "endpoint ${names}of $conf does not resolve"
    note "endpoint ${names}did not resolve; tunnel-up.sh --reresolve $if ($timer) sets it later"
  fi
  changed "peers and private key (wg setconf)"
fi
# A DNS-name endpoint missing from the interface (it did not resolve before): set it.
if [ "$unresolved" = yes ]; then : >"$tmp/names"; else name_endpoints >"$tmp/names"; fi
while read -r pk endpoint; do
  live=$(wgx wg show "$if" endpoints | awk -v pk="$pk" '$1 == pk { print $2 }')
  if [ "$live" = "(none)" ] && wgx wg set "$if" peer "$pk" endpoint "$endpoint" 2>/dev/null; then
    changed "endpoint $endpoint"
  fi
done <"$tmp/names"

# --- address, MTU, link up, routes -------------------------------------------------------------

# Both families' global addresses, sorted: the kernel lists inet before inet6, but say so.
want=$(printf '%s\n' "$address" ${address6:+"$address6"} | sort | tr '\n' ' ')
have=$(ip -o addr show dev "$if" scope global | awk '{ print $4 }' | sort | tr '\n' ' ')
if [ "$have" != "$want" ]; then
  ip addr flush dev "$if" scope global
  ip addr add "$address" dev "$if"
  changed "address $address"
  if [ -n "$address6" ]; then
    # nodad: the address is ours alone on a point-to-point link; usable at once.
    ip -6 addr add "$address6" dev "$if" nodad ||
      fail "cannot add $address6 to $if: is IPv6 disabled (sysctl net.ipv6.conf.$if.disable_ipv6)?"
    changed "address $address6"
  fi
fi
line=$(ip -o link show dev "$if")
have=$(printf '%s\n' "$line" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
if [ "$have" != "$mtu" ]; then
  ip link set dev "$if" mtu "$mtu"
  changed "mtu $mtu"
fi
case $line in
  *"<UP,"* | *",UP,"* | *",UP>"*) ;;
  *) ip link set dev "$if" up && changed "link up" ;;
esac
for r in $routes; do
  fam=-4
  case $r in *:*) fam=-6 ;; esac
  if [ -z "$(ip "$fam" route show exact "$r" dev "$if")" ]; then
    ip "$fam" route replace "$r" dev "$if"
    changed "route $r"
  fi
done
# Routes of the kind we add (proto boot) that are no longer wanted.
for r in $( (ip -4 route show dev "$if" proto boot && ip -6 route show dev "$if" proto boot) | awk '{ print $1 }'); do
  case " $routes " in
    *" $r "*) ;;
    *) ip route del "$r" dev "$if" && changed "removed route $r" ;;
  esac
done

# --- endpoint memory: set the saved endpoints again, keep saving them -------------------------

if [ -s "$memory" ]; then
  learned_peers >"$tmp/learned"
  wgx wg show "$if" endpoints >"$tmp/live"
  while read -r pk endpoint; do
    grep -qxF -- "$pk" "$tmp/learned" || continue # gone from the config, or given an Endpoint
    printf '%s\n' "$endpoint" | grep -Eq '^([0-9.]+|\[[0-9A-Za-z:.%_-]+\]):[0-9]+$' || continue
    [ "$(awk -v pk="$pk" '$1 == pk { print $2 }' "$tmp/live")" = "(none)" ] || continue
    wgx wg set "$if" peer "$pk" endpoint "$endpoint" || continue
    # Handshake now: a keepalive switched on sends one, which starts a handshake.
    if grep -qxF -- "$pk keepalive off" "$tmp/want"; then
      wgx wg set "$if" peer "$pk" persistent-keepalive 1
      wgx wg set "$if" peer "$pk" persistent-keepalive off
    fi
    changed "remembered endpoint $endpoint of peer $pk"
  done <"$memory"
fi
# With systemd the watch is a unit of its own (installed and started below, or at boot
# after the tunnel's unit); without, a background process of this run.
watch_by=process
[ "$booted" != yes ] || [ "$units_wanted" != yes ] || watch_by=unit
if [ "$watch_by" = process ] && [ -n "$(learned_peers)" ] && [ -z "$(watch_pid)" ]; then
  [ -f "$state/tunnel-up.sh" ] || fail "the endpoint memory needs a copy of tunnel-up.sh: put it in DIR"
  mkdir -p "$run"
  rm -f "$watchpid"
  setsid sh "$state/tunnel-up.sh" --watch "$if" </dev/null >>"$log" 2>&1 &
  _i=0
  until [ -n "$(watch_pid)" ]; do # it writes its own PID file (setsid may fork)
    _i=$((_i + 1))
    [ "$_i" -le 100 ] || fail "the endpoint memory's watch did not start in 10 s: $(tail -n 5 "$log")"
    sleep 0.1
  done
  changed "endpoint memory (pid $(watch_pid))"
fi

# --- boot units ------------------------------------------------------------------------------

if [ "$mode" = deploy ] && [ "$units_wanted" = yes ]; then
  [ -f "$state/tunnel-up.sh" ] || fail "the boot unit needs a copy of tunnel-up.sh: put it in $dir"
  environment="\"FORGEWAY_ETC=$etc\" \"FORGEWAY_RUN=$run\" \"FORGEWAY_WG_SOCKET_DIR=$sockets\""
  cat >"$tmp/unit" <<EOF
# forgeway: bring up WireGuard interface %I from $state at boot
[Unit]
Description=forgeway WireGuard tunnel %I
Wants=network-online.target
After=network-online.target
# Containers publish ports on the tunnel address: docker must find it there at boot.
Before=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=$environment
ExecStart=/bin/sh "$state/tunnel-up.sh" --boot %i
# A clean stop saves the peers' endpoints once more (the watch saves every 2 s).
ExecStop=/bin/sh "$state/tunnel-up.sh" --save %i

[Install]
WantedBy=multi-user.target
EOF
  install_file "$tmp/unit" "$units/forgeway-tunnel@.service" 0644
  enable_unit "$units/forgeway-tunnel@.service" "$units/multi-user.target.wants" "$svc"
  if [ -n "$(learned_peers)" ]; then
    cat >"$tmp/unit" <<EOF
# forgeway: the endpoint memory of WireGuard interface %I (peers found by their packets only)
[Unit]
Description=forgeway: remember the endpoints of the peers of WireGuard tunnel %I
After=forgeway-tunnel@%i.service
# Stopped and restarted with the tunnel; the tunnel's ExecStop saves once more after it.
PartOf=forgeway-tunnel@%i.service

[Service]
Environment=$environment
ExecStart=/bin/sh "$state/tunnel-up.sh" --watch %i
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
    install_file "$tmp/unit" "$units/forgeway-tunnel-watch@.service" 0644
    enable_unit "$units/forgeway-tunnel-watch@.service" "$units/multi-user.target.wants" "$watch_unit"
  elif [ -L "$units/multi-user.target.wants/$watch_unit" ]; then
    [ "$booted" = no ] || ! systemctl is-active --quiet "$watch_unit" || systemctl stop "$watch_unit"
    remove "$units/multi-user.target.wants/$watch_unit"
    if [ -z "$(find "$units/multi-user.target.wants" -name 'forgeway-tunnel-watch@*' 2>/dev/null)" ]; then
      remove "$units/forgeway-tunnel-watch@.service"
    fi
  fi
  if [ -n "$(name_endpoints)" ]; then
    cat >"$tmp/unit" <<EOF
# forgeway: set the DNS-name endpoints of WireGuard interface %I again
[Unit]
Description=forgeway: re-resolve the endpoints of WireGuard tunnel %I
After=forgeway-tunnel@%i.service

[Service]
Type=oneshot
Environment=$environment
ExecStart=/bin/sh "$state/tunnel-up.sh" --reresolve %i
EOF
    install_file "$tmp/unit" "$units/forgeway-tunnel-reresolve@.service" 0644
    cat >"$tmp/unit" <<EOF
# forgeway: re-resolve the DNS-name endpoints of WireGuard interface %I every 30 s
[Unit]
Description=forgeway: re-resolve the endpoints of WireGuard tunnel %I every 30 s

[Timer]
OnBootSec=30
OnUnitActiveSec=30

[Install]
WantedBy=timers.target
EOF
    install_file "$tmp/unit" "$units/forgeway-tunnel-reresolve@.timer" 0644
    enable_unit "$units/forgeway-tunnel-reresolve@.timer" "$units/timers.target.wants" "$timer"
  fi
  if [ "$booted" = yes ]; then
    if units_changed; then systemctl daemon-reload; fi
    if [ -L "$units/timers.target.wants/$timer" ] && ! systemctl is-active --quiet "$timer"; then
      systemctl start "$timer"
      changed "started $timer"
    fi
    if [ -L "$units/multi-user.target.wants/$watch_unit" ] && ! systemctl is-active --quiet "$watch_unit"; then
      # A watch this script started in the background before (no unit then) sees its
      # PID file taken over and stops by itself.
      systemctl start "$watch_unit"
      changed "started $watch_unit"
    fi
  fi
elif [ "$mode" = deploy ]; then
  note "$if: systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no), so no boot unit is installed;" \
    "to survive a reboot, run 'sh $state/tunnel-up.sh --boot $if' at boot (same FORGEWAY_* environment)"
fi

[ -n "$changes" ] || ok "nothing to change"
