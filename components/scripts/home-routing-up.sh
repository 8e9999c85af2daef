#!/bin/sh
# Converge the home device's return path for preserve-source forwarding: replies to
# connections that came in through the tunnel go back out through it (not through the
# home's own uplink, where their source address is wrong for the client). Safe to run
# any number of times: a run that finds everything as wanted prints only "ok ..." lines.
#
#   home-routing-up.sh IF MARK/MASK TABLE PRIORITY GATEWAY [GATEWAY6 [SOURCE6]] <RULESET
#
# The arguments and the ruleset come from components/render/nftables.py
# (render_home_routing: HomeRouting.script_args() and .nftables). IF must exist (the
# tunnel is brought up first). What it converges, and home-routing-down.sh removes:
#   - table ip forgeway from $FORGEWAY_ETC/forgeway/home-routing/forgeway.nft (0600):
#     connections arriving on IF get a conntrack mark bit; their replies get it as packet
#     mark. Replaced atomically by `nft -f`; no other table is touched.
#   - `ip rule add priority PRIORITY fwmark MARK/MASK lookup TABLE`
#   - `ip route replace default via GATEWAY dev IF table TABLE`
#   - with GATEWAY6 (forwarding.ipv6): table ip6 forgeway (same file, same transaction),
#     `ip -6 rule` with the same priority, mark and table, and `ip -6 route replace default
#     via GATEWAY6 dev IF table TABLE`. (IPv6 has no rp_filter sysctl.) Without GATEWAY6,
#     the IPv6 table, rule and route of an earlier run are removed.
#   - with SOURCE6 (the home's tunnel IPv6 address): `ip -6 rule add priority PRIORITY from
#     SOURCE6 lookup TABLE`. A home without an IPv6 default route finds no route for a reply
#     at all, so the reply never reaches the output hook where the mark would reroute it;
#     replies from SOURCE6 are the ones that came in through the tunnel.
#   - net.ipv4.conf.IF.rp_filter=2 (loose): the clients' packets arrive on IF while the
#     main table routes their sources out of the uplink, which strict mode (1) drops. The
#     value found before is recorded for home-routing-down.sh; a sysctl.d file keeps it at
#     boot (systemd-udevd applies per-interface keys when the interface appears).
#   - boot: when systemd is PID 1 (or FORGEWAY_SYSTEMD=yes), forgeway-home-routing.service,
#     bound to IF's device unit: it runs whenever IF appears (its routes go with it).
#     Without systemd the script says so; the caller then runs the same at boot.
# The parameters are saved; when they change, the old rule and route are removed first.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no (see forwarding-up.sh).
set -eu
me=home-routing-up tag='' say_ok=yes
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

case $# in 5 | 6 | 7) ;; *) fail "usage: home-routing-up.sh IF MARK/MASK TABLE PRIORITY GATEWAY [GATEWAY6 [SOURCE6]] <RULESET" ;; esac
if=$1 mark=$2 rtable=$3 prio=$4 gw=$5 gw6=${6:-} src6=${7:-}
case $if in '' | -* | *[!A-Za-z0-9_.-]*) fail "bad interface name '$if'" ;; esac
[ ${#if} -le 15 ] || fail "interface name '$if' is longer than 15 characters"
case $mark in 0x*/0x*) ;; *) fail "MARK/MASK '$mark' is not of the form 0x10000000/0x10000000" ;; esac
case ${mark#0x} in *[!0-9a-fA-F/x]*) fail "MARK/MASK '$mark' is not hexadecimal" ;; esac
case $rtable in '' | *[!0-9]* | 0*) fail "TABLE '$rtable' is not a table number" ;; esac
case $rtable in 253 | 254 | 255) fail "TABLE $rtable is a reserved table (default, main, local)" ;; esac
case $prio in '' | *[!0-9]* | 0*) fail "PRIORITY '$prio' is not a rule priority" ;; esac
[ "$prio" -lt 32766 ] || fail "PRIORITY $prio must come before the main table's rule (32766)"
printf '%s\n' "$gw" | grep -Eq '^[0-9]{1,3}(\.[0-9]{1,3}){3}$' || fail "GATEWAY '$gw' is not an IPv4 address"
if [ -n "$gw6" ]; then
  printf '%s\n' "$gw6" | grep -Eq '^[0-9a-f:]*:[0-9a-f:]*$' || fail "GATEWAY6 '$gw6' is not an IPv6 address"
fi
if [ -n "$src6" ]; then
  [ -n "$gw6" ] || fail "SOURCE6 '$src6' is given without GATEWAY6"
  printf '%s\n' "$src6" | grep -Eq '^[0-9a-f:]*:[0-9a-f:]*$' || fail "SOURCE6 '$src6' is not an IPv6 address"
fi

state=$etc/forgeway/home-routing
file=$state/forgeway.nft
live=$state/forgeway.live
live6=$state/forgeway6.live
params=$state/params
before=$state/rp_filter.before
sysctl_file=$etc/sysctl.d/60-forgeway-home-routing.conf
unit=forgeway-home-routing.service
table="ip forgeway"
table6="ip6 forgeway"
umask 077

for tool in nft ip sysctl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (Debian: nftables, iproute2, procps)"
done
if [ -f "$etc/forgeway/nftables/forgeway.nft" ]; then
  fail "this host has the VPS's table ip forgeway (forwarding-up.sh); one host cannot be both"
fi
ip link show dev "$if" >/dev/null 2>&1 || fail "interface $if does not exist: bring the tunnel up first (tunnel-up.sh)"

# --- the ruleset: our table only, valid for nft ---------------------------------------------

new=$tmp/forgeway.nft
read_ruleset "(ip|ip6) forgeway" "$new" components/render/nftables.py
if [ -n "$gw6" ] && ! grep -Eq "^table ip6 forgeway[[:space:]]*[{]" "$new"; then
  fail "GATEWAY6 is given but the ruleset has no table ip6 forgeway"
elif [ -z "$gw6" ] && grep -Eq "^table ip6 forgeway[[:space:]]*[{]" "$new"; then
  fail "the ruleset has table ip6 forgeway but no GATEWAY6 is given"
fi

mkdir -p "$state"
chmod 0700 "$state"

# --- parameters changed since the last run: take the old rule and route away --------------------

if [ -f "$params" ]; then
  read -r o_if o_mark o_table o_prio o_gw o_gw6 o_src6 <"$params"
  if [ "$o_if $o_mark $o_table $o_prio $o_gw${o_gw6:+ $o_gw6}${o_src6:+ $o_src6}" != "$if $mark $rtable $prio $gw${gw6:+ $gw6}${src6:+ $src6}" ]; then
    while ip -4 rule del priority "$o_prio" fwmark "$o_mark" lookup "$o_table" 2>/dev/null; do
      changed "removed the old rule: priority $o_prio fwmark $o_mark lookup $o_table"
    done
    if ip -4 route del default via "$o_gw" dev "$o_if" table "$o_table" 2>/dev/null; then
      changed "removed the old route: default via $o_gw dev $o_if table $o_table"
    fi
    if [ -n "$o_gw6" ]; then
      while ip -6 rule del priority "$o_prio" fwmark "$o_mark" lookup "$o_table" 2>/dev/null; do
        changed "removed the old IPv6 rule: priority $o_prio fwmark $o_mark lookup $o_table"
      done
      if ip -6 route del default via "$o_gw6" dev "$o_if" table "$o_table" 2>/dev/null; then
        changed "removed the old IPv6 route: default via $o_gw6 dev $o_if table $o_table"
      fi
    fi
    if [ -n "$o_src6" ]; then
      while ip -6 rule del priority "$o_prio" from "$o_src6" lookup "$o_table" 2>/dev/null; do
        changed "removed the old IPv6 rule: priority $o_prio from $o_src6 lookup $o_table"
      done
    fi
    if [ "$o_if" != "$if" ] && [ -f "$before" ]; then
      read -r b_if b_value <"$before"
      if ip link show dev "$b_if" >/dev/null 2>&1; then
        sysctl -q -w "net.ipv4.conf.$b_if.rp_filter=$b_value"
        changed "net.ipv4.conf.$b_if.rp_filter=$b_value (restored: $b_if is no longer the tunnel)"
      fi
      rm -f "$before"
    fi
    o_device="sys-subsystem-net-devices-$(printf '%s' "$o_if" | sed 's/-/\\x2d/g').device"
    if [ "$o_if" != "$if" ] && [ -L "$units/$o_device.wants/$unit" ]; then
      rm -f "$units/$o_device.wants/$unit"
      rmdir "$units/$o_device.wants" 2>/dev/null || true
      changed "removed $units/$o_device.wants/$unit"
    fi
  fi
fi
echo "$if $mark $rtable $prio $gw${gw6:+ $gw6}${src6:+ $src6}" >"$tmp/params"
install_file "$tmp/params" "$params" 0600

# --- table ip forgeway -------------------------------------------------------------------------

install_file "$new" "$file" 0600
nft_load_table "$table" "$file" "$live"
want6=no
[ -z "$gw6" ] || want6=yes
nft_sync_table "$table6" "$file" "$live6" "$want6"

# --- rule and route ------------------------------------------------------------------------------

want_rule="$prio: from all fwmark $mark lookup $rtable"
rule_and_route() { # rule_and_route -4|-6 GATEWAY WHAT: our rule and our table's default route ("ip" or "ip -6")
  if ip "$1" rule show priority "$prio" | tr -s ' \t' '  ' | grep -Fxq "$want_rule"; then
    ok "$3 rule $want_rule"
  else
    ip "$1" rule add priority "$prio" fwmark "$mark" lookup "$rtable"
    changed "$3 rule $want_rule"
  fi
  _route="default via $2 dev $if"
  # (IPv6 routes print their metric.)
  if ip "$1" route show table "$rtable" | sed 's/[[:space:]]*metric.*$//; s/[[:space:]]*$//' | grep -Fxq "$_route"; then
    ok "$3 route $_route table $rtable"
  else
    ip "$1" route replace default via "$2" dev "$if" table "$rtable"
    changed "$3 route $_route table $rtable"
  fi
}
rule_and_route -4 "$gw" ip
if [ -n "$gw6" ]; then
  rule_and_route -6 "$gw6" "ip -6"
  if [ -n "$src6" ]; then
    src_rule="$prio: from $src6 lookup $rtable"
    if ip -6 rule show priority "$prio" | tr -s ' \t' '  ' | grep -Fxq "$src_rule"; then
      ok "ip -6 rule $src_rule"
    else
      ip -6 rule add priority "$prio" from "$src6" lookup "$rtable"
      changed "ip -6 rule $src_rule"
    fi
  fi
else
  while ip -6 rule del priority "$prio" fwmark "$mark" lookup "$rtable" 2>/dev/null; do
    changed "removed ip -6 rule $want_rule (IPv6 forwarding is off)"
  done
  ip -6 route flush table "$rtable" 2>/dev/null || true
fi

# --- rp_filter loose on the tunnel -------------------------------------------------------------------

key=net.ipv4.conf.$if.rp_filter
current=$(sysctl -n "$key")
[ -f "$before" ] || echo "$if $current" >"$before"
mkdir -p "$(dirname "$sysctl_file")"
printf '%s\n' \
  "# forgeway: replies to clients that came in through $if go back through it (home-routing-up.sh);" \
  "# their sources are routed out of the uplink, so strict reverse-path filtering would drop them." \
  "# home-routing-down.sh removes this file and restores the value found before." \
  "$key = 2" >"$tmp/sysctl.conf"
install_file "$tmp/sysctl.conf" "$sysctl_file" 0644
if [ "$current" != 2 ]; then
  sysctl -q -w "$key=2"
  changed "$key=2"
else
  ok "$key=2"
fi

# --- boot --------------------------------------------------------------------------------------------

if [ "$units_wanted" = yes ]; then
  # The device unit of IF (systemd escapes '-' in unit names).
  device="sys-subsystem-net-devices-$(printf '%s' "$if" | sed 's/-/\\x2d/g').device"
  nft_bin=$(command -v nft) ip_bin=$(command -v ip) sysctl_bin=$(command -v sysctl)
  v6_lines= # IPv6's rule and route, appended to the last ExecStart line (none: the unit as before)
  if [ -n "$gw6" ]; then
    v6_lines="
ExecStart=-$ip_bin -6 rule del priority $prio fwmark $mark lookup $rtable
ExecStart=$ip_bin -6 rule add priority $prio fwmark $mark lookup $rtable
ExecStart=$ip_bin -6 route replace default via $gw6 dev $if table $rtable"
  fi
  if [ -n "$src6" ]; then
    v6_lines="$v6_lines
ExecStart=-$ip_bin -6 rule del priority $prio from $src6 lookup $rtable
ExecStart=$ip_bin -6 rule add priority $prio from $src6 lookup $rtable"
  fi
  cat >"$tmp/unit" <<EOF
# forgeway: the return path through $if for preserve-source forwarding, whenever $if
# appears. Written by home-routing-up.sh; home-routing-down.sh removes it.
[Unit]
Description=forgeway return path through $if (table $table, ip rule $prio)
BindsTo=$device
After=$device nftables.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$nft_bin -f $file
ExecStart=-$ip_bin -4 rule del priority $prio fwmark $mark lookup $rtable
ExecStart=$ip_bin -4 rule add priority $prio fwmark $mark lookup $rtable
ExecStart=$ip_bin -4 route replace default via $gw dev $if table $rtable
ExecStart=$sysctl_bin -q -w $key=2$v6_lines
[Install]
WantedBy=$device
EOF
  install_unit "$tmp/unit" "$units/$unit" "$units/$device.wants"
else
  note "systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no): no boot unit installed. To keep the" \
    "return path after a reboot the caller runs, once $if is up: nft -f $file;" \
    "ip -4 rule add priority $prio fwmark $mark lookup $rtable;" \
    "ip -4 route replace default via $gw dev $if table $rtable; sysctl -w $key=2"
  if [ -n "$gw6" ]; then
    note "and for IPv6: ip -6 rule add priority $prio fwmark $mark lookup $rtable;" \
      "ip -6 route replace default via $gw6 dev $if table $rtable${src6:+; ip -6 rule add priority $prio from $src6 lookup $rtable}"
  fi
fi

[ -n "$changes" ] || ok "home routing: nothing to change"
