#!/bin/sh
# forgeway-restic: restic with this stack's backup repository, its password file and its
# backend environment set. Installed by backup-up.sh as
# $FORGEWAY_ETC/forgeway/backup/forgeway-restic (0755); run it as root:
#
#   sudo /etc/forgeway/backup/forgeway-restic snapshots
#   sudo /etc/forgeway/backup/forgeway-restic snapshots --json     (what tools.restore reads)
#   sudo /etc/forgeway/backup/forgeway-restic check
#
# Reads, beside itself: settings (REPOSITORY, STATE; SFTP_HOST, SFTP_PORT, SFTP_USER and
# SFTP_HOST_KEYS for the default repository on the VPS), password, environment (export
# lines of the secret backup_environment), id_ed25519 and known_hosts. The SFTP login is
# this host's own key, the VPS's pinned host key, and nothing of the caller's ~/.ssh.
set -eu
me=forgeway-restic
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
rm -rf "$tmp" # restic runs by exec: no exit trap would remove it
trap - EXIT

home=$(cd "$(dirname "$0")" && pwd)
setting() { sed -n "s/^$1=//p" "$home/settings" | tail -n 1; }
[ -f "$home/settings" ] || fail "$home/settings is missing (backup-up.sh writes it)"
[ -r "$home/password" ] || fail "$home/password is not readable: run as root (sudo $0 ...)"
command -v restic >/dev/null 2>&1 || fail "restic is not installed on this host: apt-get install restic"
if [ -f "$home/environment" ]; then
  # shellcheck disable=SC1091 # written by backup-up.sh: export lines, values quoted
  . "$home/environment"
fi
RESTIC_REPOSITORY=$(setting REPOSITORY)
RESTIC_PASSWORD_FILE=$home/password
RESTIC_CACHE_DIR=$(setting STATE)/cache
export RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_CACHE_DIR
sftp_host=$(setting SFTP_HOST)
if [ -n "$sftp_host" ]; then
  checking=yes
  [ -s "$home/known_hosts" ] || checking=accept-new # insecure_unpinned_host_keys: nothing to pin
  exec restic -o "sftp.command=ssh -i $home/id_ed25519 -p $(setting SFTP_PORT) -o IdentitiesOnly=yes \
-o IdentityAgent=none -o UserKnownHostsFile=$home/known_hosts -o GlobalKnownHostsFile=/dev/null \
-o StrictHostKeyChecking=$checking -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=30 \
-o ServerAliveCountMax=6 $(setting SFTP_USER)@$sftp_host -s sftp" "$@"
fi
exec restic "$@"
