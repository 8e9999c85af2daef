#!/bin/sh
# The upgrade guard's read-only check on the GitLab host (components/upgrade.py); every
# change on every host waits for it (components/hosts.py add_preflight), so a refused
# upgrade leaves every host as it was. Changes nothing.
# Usage: gitlab-upgrade-check.sh HOST CONTAINER VOLUME TARGET ALLOW_EDITION LAST_STOP READ [STOP...]
#   VOLUME         GitLab's data volume (/var/opt/gitlab); its gitlab-rails/VERSION is the
#                  running version, as omnibus records it. No volume: a fresh install.
#                  Read in the volume's directory, or (a daemon whose files this shell does
#                  not see) through CONTAINER with `docker cp`, which reads a stopped one too.
#   TARGET         the configured version (17.11.3, 17.11.3-ee)
#   ALLOW_EDITION  yes: CE <-> EE allowed (gitlab.allow_edition_change)
#   LAST_STOP READ the upgrade path data's last stop and the date it was read
#   STOP...        the required stops below TARGET's minor, ascending (MAJOR.MINOR)
# The rules are components/upgrade.py next_step's; tests/unit/test_upgrade_path.py runs both.
set -eu
me=gitlab-upgrade-check
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
host=$1 container=$2 volume=$3 target=$4 allow=$5 last=$6 read=$7
shift 7
refuse() {
  echo "host '$host': $* (gitlab.images / gitlab.version; docs/gitlab.md, Upgrades). Nothing was changed on any host." >&2
  exit 1
}
edition() { case $1 in *-ee) echo ee ;; *) echo ce ;; esac; }
numbers() { v=${1%-ee}; echo "${v%-ce}"; }
# MAJOR.MINOR.PATCH as one comparable number, and MAJOR.MINOR alone.
key() { numbers "$1" | awk -F. '{ printf "%d%04d%04d\n", $1, $2, $3 }'; }
minor_key() { numbers "$1" | awk -F. '{ printf "%d%04d\n", $1, $2 }'; }
valid() { numbers "$1" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$'; }
upper() { echo "$1" | tr '[:lower:]' '[:upper:]'; }

if ! docker volume inspect "$volume" >/dev/null 2>&1; then
  echo "no volume $volume: a fresh install of GitLab $target"
  exit 0
fi
# A volume bound to a host directory (gitlab.volume_paths) is mounted only while a
# container uses it: read the directory itself.
dir=$(docker volume inspect -f '{{with .Options}}{{index . "device"}}{{end}}' "$volume")
[ -n "$dir" ] || dir=$(docker volume inspect -f '{{.Mountpoint}}' "$volume")
file=$dir/gitlab-rails/VERSION
if [ -d "$dir" ]; then
  current=$(head -n 1 "$file" 2>/dev/null | tr -d ' \r') || current=
elif docker inspect "$container" >/dev/null 2>&1; then
  file="$container:/var/opt/gitlab/gitlab-rails/VERSION"
  current=$(docker cp "$file" - 2>/dev/null | tar -xO 2>/dev/null | head -n 1 | tr -d ' \r') || current=
else
  refuse "cannot read $volume's gitlab-rails/VERSION: its directory $dir is not on this host's file system and no container $container uses it"
fi
if [ -z "$current" ]; then
  echo "volume $volume has no gitlab-rails/VERSION (GitLab never finished a first start): a fresh install of GitLab $target"
  exit 0
fi
valid "$current" || refuse "$file says '$current', not a GitLab version: check the volume"

if [ "$(edition "$current")" != "$(edition "$target")" ] && [ "$allow" != yes ]; then
  refuse "GitLab runs $current ($(upper "$(edition "$current")")) but the config deploys $target ($(upper "$(edition "$target")")): an edition change is refused unless gitlab.allow_edition_change is true"
fi
if [ "$(key "$target")" -lt "$(key "$current")" ]; then
  refuse "GitLab runs $current but the config deploys $target: a downgrade is refused (GitLab cannot run on a newer version's data; restore a backup of $target instead)"
fi
if [ "$(key "$target")" -eq "$(key "$current")" ]; then
  echo "GitLab runs $current, the configured version"
  exit 0
fi
for stop in "$@"; do
  if [ "$(minor_key "$stop.0")" -gt "$(minor_key "$current")" ]; then
    refuse "GitLab runs $current but the config deploys $target, which skips the required upgrade stop $stop: deploy the latest $stop.x patch first, let background migrations finish, then go on"
  fi
done
if [ "${target%%.*}" -gt "${last%%.*}" ] && [ "$(minor_key "$current")" -ge "$(minor_key "$last.0")" ]; then
  refuse "GitLab runs $current but the config deploys $target, past the upgrade path data (last stop $last, read $read): update components/data/gitlab_upgrade_path.yml"
fi
echo "GitLab $current -> $target: no required stop between"
