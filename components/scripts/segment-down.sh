#!/bin/sh
# Remove exactly what segment-up.sh added, and succeed when it is gone already (a
# second run prints only "ok ..."). Takes no arguments: table inet forgeway_segment,
# the boot unit forgeway-segment.service and the saved files; nothing else is touched.
#
# Environment: FORGEWAY_ETC=/etc (see segment-up.sh).
set -eu
me=segment-down tag=''
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -eq 0 ] || fail "usage: segment-down.sh (no arguments)"

state=$etc/forgeway/segment
unit=forgeway-segment.service
table="inet forgeway_segment"

if command -v nft >/dev/null && nft list table "$table" >/dev/null 2>&1; then
  nft delete table "$table"
  gone "table $table"
fi

remove_units "$units/multi-user.target.wants/$unit" "$units/$unit"
drop "$state/segment.nft" "$state/segment.live"
drop_state_dir "$state"

[ -n "$changes" ] || ok "segment: nothing to remove"
