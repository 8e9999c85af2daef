#!/bin/sh
# Remove exactly what home-routing-up.sh added on the home device, and succeed when it
# is gone already (a second run prints only "ok ..."). Takes no arguments: the rule,
# route and interface are read from the parameters saved by home-routing-up.sh.
#
#   - table ip forgeway; the ip rule (priority, fwmark, table: all three must match) and
#     the default route of our table via the tunnel
#   - table ip6 forgeway, the ip -6 rule and route (forwarding.ipv6), the same way, and
#     the ip -6 rule by source (priority, from, table)
#   - net.ipv4.conf.IF.rp_filter back to the value recorded before (when IF exists), and
#     the sysctl.d file
#   - the boot unit forgeway-home-routing.service, the saved ruleset and records
#
# Environment: FORGEWAY_ETC=/etc (see forwarding-up.sh).
set -eu
me=home-routing-down tag=''
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -eq 0 ] || fail "usage: home-routing-down.sh (no arguments)"

state=$etc/forgeway/home-routing
file=$state/forgeway.nft
live=$state/forgeway.live
live6=$state/forgeway6.live
params=$state/params
before=$state/rp_filter.before
sysctl_file=$etc/sysctl.d/60-forgeway-home-routing.conf
unit=forgeway-home-routing.service
table="ip forgeway"

# Never the VPS's table of the same name.
if [ -f "$etc/forgeway/nftables/forgeway.nft" ]; then
  fail "this host has the VPS's table ip forgeway (forwarding-up.sh): not removing it; use forwarding-down.sh"
fi

for t in "$table" "ip6 forgeway"; do
  if command -v nft >/dev/null && nft list table "$t" >/dev/null 2>&1; then
    nft delete table "$t"
    gone "table $t"
  fi
done

if [ -f "$params" ]; then
  read -r if mark rtable prio gw gw6 src6 <"$params"
  while ip -4 rule del priority "$prio" fwmark "$mark" lookup "$rtable" 2>/dev/null; do
    gone "ip rule $prio: from all fwmark $mark lookup $rtable"
  done
  if ip -4 route del default via "$gw" dev "$if" table "$rtable" 2>/dev/null; then
    gone "ip route default via $gw dev $if table $rtable"
  fi
  if [ -n "$gw6" ]; then
    while ip -6 rule del priority "$prio" fwmark "$mark" lookup "$rtable" 2>/dev/null; do
      gone "ip -6 rule $prio: from all fwmark $mark lookup $rtable"
    done
    if ip -6 route del default via "$gw6" dev "$if" table "$rtable" 2>/dev/null; then
      gone "ip -6 route default via $gw6 dev $if table $rtable"
    fi
  fi
  if [ -n "${src6:-}" ]; then
    while ip -6 rule del priority "$prio" from "$src6" lookup "$rtable" 2>/dev/null; do
      gone "ip -6 rule $prio: from $src6 lookup $rtable"
    done
  fi
  device="sys-subsystem-net-devices-$(printf '%s' "$if" | sed 's/-/\\x2d/g').device"
  remove_units "$units/$device.wants/$unit"
  rmdir "$units/$device.wants" 2>/dev/null || true
fi

if [ -f "$before" ]; then
  read -r b_if b_value <"$before"
  case $b_value in 0 | 1 | 2) ;; *) fail "$before holds '$b_if $b_value', not an interface and 0, 1 or 2" ;; esac
  key=net.ipv4.conf.$b_if.rp_filter
  if ip link show dev "$b_if" >/dev/null 2>&1 && [ "$(sysctl -n "$key")" != "$b_value" ]; then
    sysctl -q -w "$key=$b_value"
    gone "$key=2 (back to $b_value, as before home-routing-up.sh)"
  fi
  rm -f "$before"
fi

remove_units "$units/$unit"
drop "$sysctl_file" "$file" "$live" "$live6" "$params"
drop_state_dir "$state"

[ -n "$changes" ] || ok "home routing: nothing to remove"
