#!/bin/sh
# The read-only first check on a host; every change on any host waits for it
# (components/hosts.py), so a host that fails it leaves every host as it was.
# Runs as the SSH login user (not through sudo: it is what checks sudo).
# Usage: check-arch.sh EXPECTED_ARCH HOST_NAME BECOME DOCKER
#   BECOME  sudo: the user must run `sudo -n` as root (no password: nobody types one)
#           none: the user must be root
#   DOCKER  docker: the host runs containers through the docker provider, which runs
#           `docker system dial-stdio` as this user: docker must answer it (root, or
#           the docker group); no-docker: not checked
# Refuses a CPU that is not the architecture the stack says: images are chosen per
# architecture, and a wrong one fails late and obscurely.
# Prints the arch, then `cores N`. Changes nothing.
set -eu
expected=$1 host=$2 become=${3:-none} docker=${4:-no-docker}
fail() {
  echo "host '$host': $*" >&2
  exit 1
}
machine=$(uname -m)
case "$machine" in
  aarch64 | arm64) actual=arm64 ;;
  x86_64 | amd64) actual=amd64 ;;
  *) actual=$machine ;;
esac
if [ "$actual" != "$expected" ]; then
  echo "host '$host' is $machine ($actual), but the stack config says arch: $expected" >&2
  exit 1
fi
user=$(id -un 2>/dev/null || id -u)
sudoers="$user ALL=(ALL:ALL) NOPASSWD: ALL"
case $become in
  sudo)
    command -v sudo >/dev/null 2>&1 ||
      fail "hosts[].become is sudo, but sudo is not installed: as root, \`apt-get install sudo\`, then add the line '$sudoers' to /etc/sudoers.d/forgeway (\`visudo -f /etc/sudoers.d/forgeway\`)"
    # The form every command uses (components/scripts become_command).
    if ! uid=$(sudo -n -- env sh -c 'id -u' 2>/dev/null) || [ "$uid" != 0 ]; then
      why=$(sudo -n -- env sh -c 'id -u' 2>&1 | tail -n 1 || true)
      fail "user '$user' cannot run commands as root with \`sudo -n\` (hosts[].become is sudo; sudo says: ${why:-no root}): as root, add the line '$sudoers' to /etc/sudoers.d/forgeway (\`visudo -f /etc/sudoers.d/forgeway\`, mode 0440), or connect as root"
    fi
    ;;
  none)
    [ "$(id -u)" = 0 ] ||
      fail "user '$user' is not root and hosts[].become is none: host scripts write /etc and load firewall rules as root; set become: sudo (and the sudoers line '$sudoers') or connect as root"
    ;;
  *) fail "become '$become': expected sudo or none" ;;
esac
if [ "$docker" = docker ]; then
  command -v docker >/dev/null 2>&1 ||
    fail "no docker client for user '$user': the docker provider runs \`docker system dial-stdio\` over SSH; install Docker (docker.io or docker-ce)"
  if ! why=$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
    case $why in
      *ermission*)
        fail "user '$user' cannot use docker (${why##*: }): the docker provider connects as this user; as root, \`usermod -aG docker $user\` (it takes effect at the user's next login), or connect as root" ;;
      *) fail "docker does not answer user '$user' (DOCKER_HOST=${DOCKER_HOST:-default}): $why" ;;
    esac
  fi
fi
echo "$actual"
# Its CPU count: a runner's default concurrency (components/runners.py reads this line).
echo "cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
