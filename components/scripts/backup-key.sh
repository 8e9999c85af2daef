#!/bin/sh
# The GitLab host's own backup key: the SSH key restic logs in to the SFTP repository on
# the VPS with. Made on the host, never leaving it; only its public half is printed.
#
#   backup-key.sh HOST       make $FORGEWAY_ETC/forgeway/backup/id_ed25519 (+ .pub) if
#                            missing (comment forgeway-backup@HOST); print the public key,
#                            and nothing else, on stdout
#   backup-key.sh --delete   remove the key pair, then the directory when empty
#
# Environment: FORGEWAY_ETC=/etc. Needs ssh-keygen (Debian: openssh-client).
set -eu
me=backup-key tag=
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 1 ] || fail "usage: backup-key.sh HOST | --delete"
home=$etc/forgeway/backup
key=$home/id_ed25519

if [ "$1" = --delete ]; then
  drop "$key" "$key.pub"
  rmdir "$home" 2>/dev/null || true # the backup's own files may still be there
  drop_state_dir "$home"
  exit 0
fi
case $1 in '' | *[!a-z0-9-]*) fail "HOST '$1' is not a host name (a DNS label)" ;; esac

if [ ! -s "$key" ] || [ ! -s "$key.pub" ]; then
  command -v ssh-keygen >/dev/null 2>&1 || fail "ssh-keygen is missing on this host: apt-get install openssh-client"
  [ -d "$home" ] || { mkdir -p "$home" && chmod 0755 "$home"; }
  rm -f "$key" "$key.pub"
  ssh-keygen -q -t ed25519 -N '' -C "forgeway-backup@$1" -f "$key" </dev/null >/dev/null 2>"$tmp/err" ||
    fail "ssh-keygen failed: $(tail -n 1 "$tmp/err")"
  note "made the backup key $key (it never leaves this host)"
fi
chmod 0600 "$key"
chmod 0644 "$key.pub"
cut -d ' ' -f 1,2 "$key.pub"
