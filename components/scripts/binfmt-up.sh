#!/bin/sh
# Converge QEMU binfmt on a runner host (runner.multiarch): jobs run, and buildx builds,
# binaries of the other CPU. Safe to run any number of times; a run that finds
# everything as wanted changes nothing and prints only "ok ...".
#
#   binfmt-up.sh IMAGE PLATFORMS
#
#   IMAGE      the pinned binfmt image (runners.binfmt_image), as this host's docker
#              has it: the program passes the image ID it pulled
#   PLATFORMS  what to emulate, comma-separated: arm64, amd64 (never the host's own)
#
# The image speaks tonistiigi/binfmt's interface: run with no argument it prints JSON
# whose "emulators" lists the registered handlers (qemu-aarch64, qemu-x86_64, ...);
# `--install PLATFORMS` registers (with the F flag: the interpreter is opened now, so
# every container can use it); `--uninstall NAME` removes one. binfmt_misc is kernel
# state, gone at reboot, so a docker container forgeway-binfmt (created, run to its
# end, never restarted by docker) holds `IMAGE --install PLATFORMS` and is started:
#   now, when an emulator is missing;
#   at boot: with systemd (FORGEWAY_SYSTEMD=yes, or auto and systemd is PID 1)
#     systemd/system/forgeway-binfmt.service (oneshot, after docker.service), enabled
#     in multi-user.target.wants; without: cron.d/forgeway-binfmt (@reboot).
# Both run $FORGEWAY_ETC/forgeway/binfmt/forgeway-binfmt (with the DOCKER_HOST of this
# run). The container also keeps the image in use, so the prune timer leaves it.
#
# Handlers this script registered (absent before it ran) are listed in
# forgeway/binfmt/ours: binfmt-down.sh removes exactly those; a handler the host had
# before stays, as does one that another tool registered since. Handlers live only while
# binfmt_misc is mounted somewhere (Linux 6.7 and later): when /proc/sys/fs/binfmt_misc
# is not (systemd mounts it; other inits may not), this script mounts it there, and so
# does the launcher at boot; forgeway/binfmt/mounted says so, and down unmounts it when
# no handler is left.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no, DOCKER_HOST.
set -eu
me=binfmt-up tag=binfmt
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
umask 022

[ $# -eq 2 ] || fail "usage: binfmt-up.sh IMAGE PLATFORMS"
image=$1
platforms=$2
case $image in
  '' | -* | *[!A-Za-z0-9._:/@-]*) fail "IMAGE '$image' is not an image reference or ID" ;;
esac
emulators=
for platform in $(printf '%s' "$platforms" | tr ',' ' '); do
  case $platform in
    arm64) emulators="$emulators qemu-aarch64" ;;
    amd64) emulators="$emulators qemu-x86_64" ;;
    *) fail "PLATFORMS: '$platform' is not arm64 or amd64" ;;
  esac
done
[ -n "$emulators" ] || fail "PLATFORMS '$platforms' names no platform"
command -v docker >/dev/null 2>&1 || fail "no docker CLI on this host"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || fail "docker does not answer (DOCKER_HOST=${DOCKER_HOST:-default})"
docker image inspect "$image" >/dev/null 2>&1 || fail "docker has no image '$image' (the program pulls it first)"

name=forgeway-binfmt
home=$etc/forgeway/binfmt
launcher=$home/$name
ours=$home/ours
dirs=$home/dirs
service=$units/$name.service
wants=$units/multi-user.target.wants/$name.service
cron=$etc/cron.d/$name

# What registering needs, and no more than that (not --privileged: no devices, no other
# capability): mount binfmt_misc (SYS_ADMIN; AppArmor's docker-default denies mount) and
# write it (/proc/sys is read-only and masked in a container unless systempaths=unconfined).
binfmt_docker() { # binfmt_docker run|create ARGS...: with what registering needs, not --privileged
  _verb=$1
  shift
  docker "$_verb" --cap-add SYS_ADMIN --security-opt apparmor=unconfined --security-opt systempaths=unconfined "$@"
}

registered() { # the handlers registered now, one per line
  binfmt_docker run --rm "$image" >"$tmp/status" 2>"$tmp/status.err" ||
    fail "the binfmt image could not report the handlers: $(tail -n 3 "$tmp/status.err")"
  tr -d ' \n\t' <"$tmp/status" | sed -n 's/.*"emulators":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '"'
}

# --- binfmt_misc mounted ----------------------------------------------------------------
# Handlers live as long as a binfmt_misc mount does (since Linux 6.7 an instance goes with
# its last mount): systemd keeps one at /proc/sys/fs/binfmt_misc; elsewhere this does.
binfmt_misc=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt_misc/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt_misc" || fail "cannot mount binfmt_misc at $binfmt_misc"
  mkdirs "$home"
  : >"$home/mounted"
  changed "mounted binfmt_misc at $binfmt_misc"
fi

# --- the container the boot runs -------------------------------------------------------

want_args="--install $platforms"
have=$(docker container inspect --format '{{.Image}} {{join .Args " "}}' "$name" 2>/dev/null || true)
want_image=$(docker image inspect --format '{{.Id}}' "$image")
if [ "$have" != "$want_image $want_args" ]; then
  [ -z "$have" ] || docker rm -f "$name" >/dev/null
  binfmt_docker create --name "$name" --restart no --label forgeway.role=binfmt \
    "$image" --install "$platforms" >/dev/null
  changed "container $name ($want_args)"
fi

# --- the handlers now --------------------------------------------------------------------

before=$(registered)
missing=
for emulator in $emulators; do
  printf '%s\n' "$before" | grep -qxF "$emulator" || missing="$missing $emulator"
done
if [ -n "$missing" ]; then
  docker start -a "$name" >"$tmp/install" 2>&1 || fail "installing$missing failed: $(tail -n 3 "$tmp/install")"
  after=$(registered)
  mkdirs "$home"
  for emulator in $missing; do
    printf '%s\n' "$after" | grep -qxF "$emulator" ||
      fail "$emulator is not registered after the install (is binfmt_misc in this kernel?): $(tail -n 3 "$tmp/install")"
    grep -qxF "$emulator" "$ours" 2>/dev/null || echo "$emulator" >>"$ours"
    changed "registered $emulator"
  done
fi
# Handlers of ours no longer wanted (PLATFORMS changed): uninstall them.
if [ -f "$ours" ]; then
  : >"$tmp/ours"
  while read -r emulator; do
    case " $emulators " in
      *" $emulator "*) echo "$emulator" >>"$tmp/ours" ;;
      *)
        binfmt_docker run --rm "$image" --uninstall "$emulator" >/dev/null 2>&1 || true
        changed "unregistered $emulator (no longer wanted)"
        ;;
    esac
  done <"$ours"
  cmp -s "$tmp/ours" "$ours" || cp "$tmp/ours" "$ours"
fi

# --- the boot: launcher, then a unit or a cron line ---------------------------------------

{
  echo "#!/bin/sh"
  echo "# forgeway: register QEMU binfmt handlers at boot (binfmt-up.sh); change the stack config instead"
  [ -z "${DOCKER_HOST:-}" ] || echo "export DOCKER_HOST=$DOCKER_HOST"
  echo "[ -e $binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc $binfmt_misc"
  echo "i=0"
  echo "until docker version >/dev/null 2>&1; do # cron's @reboot does not wait for docker"
  echo "  i=\$((i + 1))"
  echo "  [ \"\$i\" -lt 60 ] || { echo \"$name: docker does not answer\" >&2; exit 1; }"
  echo "  sleep 2"
  echo "done"
  echo "exec docker start -a $name"
} >"$tmp/launcher"
install_file "$tmp/launcher" "$launcher" 0755

if [ "$units_wanted" = yes ]; then
  cat >"$tmp/service" <<EOF
# forgeway: register QEMU binfmt handlers for$emulators (binfmt-up.sh)
[Unit]
Description=forgeway: QEMU binfmt handlers for cross-arch jobs
Requires=docker.service
After=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart="$launcher"

[Install]
WantedBy=multi-user.target
EOF
  install_file "$tmp/service" "$service" 0644
  enable_unit "$service" "$(dirname "$wants")"
  remove "$cron"
  [ "$booted" = no ] || ! units_changed || systemctl daemon-reload
else
  cat >"$tmp/cron" <<EOF
# forgeway: register QEMU binfmt handlers for$emulators at boot (binfmt-up.sh)
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
@reboot root '$launcher'
EOF
  install_file "$tmp/cron" "$cron" 0644
  remove "$wants" "$service"
fi

save_dirs "$dirs"
[ -n "$changes" ] || ok "registered:$emulators ($name)"
