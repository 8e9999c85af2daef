#!/bin/sh
# <host>-forge-check (components/forge_switch.py): the forge-switch guard's read-only check
# on the forge host; every change on every host waits for it, so a refused switch leaves
# every host as it was. Changes nothing.
#
#   forge-switch-check.sh HOST FORGE ALLOW VOLUME...
#
#   FORGE   the forge the config now runs (gitea or gitlab)
#   ALLOW   yes: allow_forge_change is set (the data was migrated, or is not wanted)
#   VOLUME  the other forge's volumes (gitea: forgeway-gitlab-config, -logs, -data;
#           gitlab: forgeway-gitea-data, forgeway-woodpecker-server-data)
#
# A volume that exists and is not empty holds the other forge's data: switching forges
# moves no repository, user or image, so the check refuses unless ALLOW is yes. A volume
# whose directory this shell cannot see (a daemon on another file system) counts as data.
set -eu
me="forge-switch-check"
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -ge 3 ] || fail "usage: forge-switch-check.sh HOST FORGE ALLOW VOLUME..."
host=$1 forge=$2 allow=$3
shift 3
case $allow in yes | no) ;; *) fail "ALLOW '$allow': expected yes or no" ;; esac

held=
for volume in "$@"; do
  docker volume inspect "$volume" >/dev/null 2>&1 </dev/null || continue
  dir=$(docker volume inspect -f '{{with .Options}}{{index . "device"}}{{end}}' "$volume" </dev/null)
  [ -n "$dir" ] || dir=$(docker volume inspect -f '{{.Mountpoint}}' "$volume" </dev/null)
  if [ ! -d "$dir" ]; then
    held="$held $volume (not readable here: counted as data)"
  elif [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    held="$held $volume"
  fi
done
if [ -z "$held" ]; then
  echo "forge $forge: no other forge's data on $host"
  exit 0
fi
if [ "$allow" = yes ]; then
  echo "forge $forge: the other forge's volumes hold data ($held ), allowed by allow_forge_change; they are kept"
  exit 0
fi
echo "host '$host': the stack's forge is now $forge, but these volumes hold the other forge's data:$held." \
  "Changing forgeway:forge moves no repository, user or image. Migrate them by hand (docs/gitea.md," \
  "Switching forges), or set forgeway:allow_forge_change to true to go on without them. Nothing was changed on any host." >&2
exit 1
