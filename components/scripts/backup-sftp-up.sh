#!/bin/sh
# Converge the VPS's side of the default backup repository: an SFTP-only, chrooted user
# that only the GitLab host's backup key logs in as. Safe to run any number of times; a
# run that finds everything as wanted changes nothing and prints only "ok ...".
#
#   backup-sftp-up.sh KEY     KEY: the GitLab host's backup public key, "ssh-ed25519 AAAA..."
#
# Makes or keeps:
#   user forgeway-backup            system user, shell nologin, password '*' (no password login)
#   $ROOT/srv/forgeway-backup       the chroot: root-owned 0755 (sshd's rule for ChrootDirectory)
#   $ROOT/srv/forgeway-backup/restic   the repository, owned by forgeway-backup, 0700 (kept by down)
#   $FORGEWAY_ETC/forgeway/backup-sftp/authorized_keys   root-owned 0644: KEY with `restrict`
#       ($FORGEWAY_ETC/forgeway 0711 if it was 0700: sshd reads the file as the user)
#   $FORGEWAY_ETC/ssh/sshd_config.d/forgeway-backup.conf  Match User forgeway-backup: the chroot,
#       ForceCommand internal-sftp, publickey only, no forwarding, no tty; checked with
#       `sshd -t` before sshd reloads (a drop-in sshd refuses is taken back, nothing changed)
# $ROOT is the parent of FORGEWAY_ETC when that is not /etc (a test's own tree), else /.
# sshd reloads (systemctl reload ssh) only when the drop-in changed and systemd runs.
# A Match block in a file of sshd_config.d ends with that file (OpenSSH 9.2, Debian 12:
# tests/lab/test_backup_scripts.py checks other users with `sshd -T`).
set -eu
me=backup-sftp-up tag=backup-sftp
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
umask 022

[ $# -eq 1 ] || fail "usage: backup-sftp-up.sh KEY"
key=$(printf '%s' "$1" | cut -d ' ' -f 1,2)
case $key in
  ssh-ed25519\ AAAA*) ;;
  *) fail "KEY '$key' is not an ssh-ed25519 public key (backup-key.sh prints one)" ;;
esac
case $key in *[!A-Za-z0-9+/=\ -]*) fail "KEY has characters a public key does not" ;; esac

user='forgeway-backup'
root=
[ "$etc" = /etc ] || root=$(dirname "$etc")
chroot=$root/srv/forgeway-backup
repo=$chroot/restic
keys_dir=$etc/forgeway/backup-sftp
keys=$keys_dir/authorized_keys
dropin=$etc/ssh/sshd_config.d/forgeway-backup.conf
sshd_config=$etc/ssh/sshd_config

command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || fail "sshd is missing on this host (apt-get install openssh-server)"
sshd=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
[ -f "$sshd_config" ] || fail "$sshd_config is missing: the backup's SFTP user needs this host's sshd"
grep -Eq '^[[:space:]]*Include[[:space:]].*sshd_config\.d/' "$sshd_config" ||
  fail "$sshd_config does not Include sshd_config.d/*.conf (Debian's does): add 'Include /etc/ssh/sshd_config.d/*.conf' at its top"
[ -x /usr/sbin/nologin ] || fail "/usr/sbin/nologin is missing"

# --- the user -----------------------------------------------------------------------------
if ! getent passwd "$user" >/dev/null 2>&1; then
  # -p '*': no password login, and not "locked" (sshd without PAM refuses a locked account)
  useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin -p '*' \
    --comment "forgeway backups (SFTP only)" "$user"
  changed "user $user (system, nologin, SFTP only)"
else
  shell=$(getent passwd "$user" | cut -d: -f7)
  if [ "$shell" != /usr/sbin/nologin ]; then
    usermod --shell /usr/sbin/nologin "$user"
    changed "user $user: shell nologin (was $shell)"
  fi
fi

# --- the chroot and the repository ----------------------------------------------------------
mkdirs "$chroot" # parents 0755, root's
if [ "$(stat -c %U:%a "$chroot")" != root:755 ]; then
  chown root:root "$chroot"
  chmod 0755 "$chroot"
  changed "$chroot (root-owned 0755: sshd's ChrootDirectory rule)"
fi
if [ ! -d "$repo" ]; then
  mkdir -m 0700 "$repo"
  chown "$user:$user" "$repo"
  changed "$repo (the repository, owned by $user)"
elif [ "$(stat -c %U:%a "$repo")" != "$user:700" ]; then
  # A user made again (after a delete) may have another uid: give it its data back.
  chown -R "$user:$user" "$repo"
  chmod 0700 "$repo"
  changed "$repo (owner $user again)"
fi

# --- the key and sshd ------------------------------------------------------------------------
# sshd reads a user's AuthorizedKeysFile as that user: forgeway-backup must pass through
# $etc/forgeway, which stage.sh makes 0700. Search only (0711): nothing in it is listed,
# and the stages inside stay 0700. Down puts the mode back.
forgeway=$etc/forgeway
mode=$(stat -c %a "$forgeway")
mkdirs "$keys_dir"
if [ "$mode" = 700 ]; then
  echo 700 >"$keys_dir/forgeway-mode"
  chmod 0711 "$forgeway"
  changed "$forgeway 0711 (was 0700): $user reads its authorized_keys below it"
fi
printf 'restrict %s forgeway-backup\n' "$key" >"$tmp/keys"
install_file "$tmp/keys" "$keys" 0644
cat >"$tmp/dropin" <<EOF2
# forgeway: the backup repository's SFTP-only user (backup-sftp-up.sh); the Match ends with this file
Match User $user
	ChrootDirectory $chroot
	ForceCommand internal-sftp
	AuthorizedKeysFile $keys
	AuthenticationMethods publickey
	PubkeyAuthentication yes
	PasswordAuthentication no
	KbdInteractiveAuthentication no
	AllowTcpForwarding no
	AllowAgentForwarding no
	AllowStreamLocalForwarding no
	X11Forwarding no
	PermitTunnel no
	PermitTTY no
	PermitUserRC no
	GatewayPorts no
EOF2
if [ -f "$dropin" ]; then cp -p "$dropin" "$tmp/previous"; fi
install_file "$tmp/dropin" "$dropin" 0644
if [ "$installed" = yes ]; then
  if ! err=$("$sshd" -t -f "$sshd_config" 2>&1); then
    if [ -f "$tmp/previous" ]; then cp -p "$tmp/previous" "$dropin"; else rm -f "$dropin"; fi
    fail "sshd -t refuses the config with $dropin, so it was taken back: $err"
  fi
  if [ "$booted" = yes ] && [ "$etc" = /etc ]; then
    systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service
    changed "sshd reloaded"
  else
    note_out "systemd is not running here (or FORGEWAY_ETC is not /etc): reload sshd to apply $dropin"
  fi
fi

[ -n "$changes" ] || ok "user $user, $repo, $dropin"
