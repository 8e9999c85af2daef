#!/bin/sh
# <host>-gitea-tls-key (components/gitea.py): the server certificate's private key (own-ca),
# on stdin only, into Gitea's data volume as KEY_FILE, owned by the container's git user and
# 0600. Gitea's web server runs as git and reads it itself; a file the docker provider
# uploads is root's (its tar headers carry no owner), which git could not read.
#
#   gitea-tls-key.sh VOLUME UID
#
#   VOLUME  Gitea's data volume (forgeway-gitea-data), mounted at /data in the container
#   UID     the git user's uid in the image (USER_UID, 1000 in gitea/gitea)
#
# Writes only when the key differs (a second run prints ok); the volume is retained, so
# there is no delete: the key goes with the volume.
set -eu
me=gitea-tls-key tag=gitea-tls-key
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 2 ] || fail "usage: gitea-tls-key.sh VOLUME UID"
volume=$1 uid=$2
case $volume in '' | *[!A-Za-z0-9_.-]*) fail "VOLUME '$volume' is not a volume name" ;; esac
case $uid in '' | *[!0-9]*) fail "UID '$uid' is not a number" ;; esac

root=$(docker volume inspect -f '{{.Mountpoint}}' "$volume" </dev/null) || fail "no docker volume $volume"
[ -d "$root" ] || fail "volume $volume: mount point $root is not a directory"
dir=$root/forgeway
umask 077
cat >"$tmp/key"
grep -q 'PRIVATE KEY-----' "$tmp/key" || fail "stdin is not a PEM private key"
if [ -f "$dir/tls.key" ] && cmp -s "$tmp/key" "$dir/tls.key"; then
  ok "$volume/forgeway/tls.key"
  exit 0
fi
mkdir -p "$dir"
chown "$uid:$uid" "$dir"
chmod 0700 "$dir"
cp "$tmp/key" "$dir/tls.key.new"
chown "$uid:$uid" "$dir/tls.key.new"
chmod 0600 "$dir/tls.key.new"
mv "$dir/tls.key.new" "$dir/tls.key"
changed "$volume/forgeway/tls.key"
