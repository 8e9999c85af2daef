#!/bin/sh
# Remove exactly what segment-up.sh added, and succeed when it is gone already (a
# second run prints only "ok ..."). Takes no arguments: table inet forgeway_segment,
# the boot unit forgeway-segment.service and the saved files; nothing else is touched.
#
# Environment: FORGEWAY_ETC=/etc (see segment-up.sh).
set -eu

fail() { echo "segment-down: $*" >&2; exit 1; }
[ $# -eq 0 ] || fail "usage: segment-down.sh (no arguments)"

etc=${FORGEWAY_ETC:-/etc}
state=$etc/forgeway/segment
units=$etc/systemd/system
unit=forgeway-segment.service
table="inet forgeway_segment"

removed=
gone() { removed=yes; echo "removed $*"; }

if command -v nft >/dev/null && nft list table "$table" >/dev/null 2>&1; then
  nft delete table "$table"
  gone "table $table"
fi

unit_gone=no
for f in "$units/multi-user.target.wants/$unit" "$units/$unit"; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    rm -f "$f"
    gone "$f"
    unit_gone=yes
  fi
done
if [ "$unit_gone" = yes ] && [ -d /run/systemd/system ] && [ "$etc" = /etc ]; then
  systemctl daemon-reload
fi
for f in "$state/segment.nft" "$state/segment.live"; do
  if [ -f "$f" ]; then
    rm -f "$f"
    gone "$f"
  fi
done
rmdir "$state" 2>/dev/null || true
rmdir "$etc/forgeway" 2>/dev/null || true # only when no other part of forgeway uses it

[ -n "$removed" ] || echo "ok segment: nothing to remove"
