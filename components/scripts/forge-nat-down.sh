#!/bin/sh
# Remove exactly what forge-nat-up.sh added, and succeed when it is gone already (a
# second run prints only "ok ..."). Takes no arguments: tables ip6/ip forgeway_forge,
# the boot unit forgeway-forge-nat.service, the sysctl.d file and the saved files; the
# IPv6 sysctls go back to the values found before (restore_ipv6_sysctls). Nothing else
# is touched.
#
# Environment: FORGEWAY_ETC=/etc (see forge-nat-up.sh).
set -eu
me=forge-nat-down tag=''
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -eq 0 ] || fail "usage: forge-nat-down.sh (no arguments)"

state=$etc/forgeway/forge-nat
unit=forgeway-forge-nat.service

for family in ip6 ip; do
  if command -v nft >/dev/null && nft list table "$family" forgeway_forge >/dev/null 2>&1; then
    nft delete table "$family" forgeway_forge
    gone "table $family forgeway_forge"
  fi
done

remove_units "$units/multi-user.target.wants/$unit" "$units/$unit"
drop "$etc/sysctl.d/60-forgeway-forge-nat.conf"
restore_ipv6_sysctls "$state"
drop "$state/forge6.nft" "$state/forge6.nft.live" "$state/forge4.nft" "$state/forge4.nft.live"
drop_state_dir "$state"

[ -n "$changes" ] || ok "forge-nat: nothing to remove"
