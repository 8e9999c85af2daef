#!/bin/sh
# Write files into a directory on the host, each given as NAME and its gzipped text in base64
# (gzip keeps the whole command far below Linux's one-argument limit of 128 KiB):
#   stage.sh DIR NAME B64 [NAME B64 ...]
# Components ship rendered files this way inside their command, so a host needs no
# copy step; secrets never travel here (they go on stdin). Owner-only, replaced whole.
set -eu
dir=$1
shift
umask 077
command -v gzip >/dev/null 2>&1 || { echo "stage: gzip is missing on this host (apt-get install gzip)" >&2; exit 1; }
mkdir -p "$dir"
while [ $# -ge 2 ]; do
  case $1 in
    "" | */* | .*) echo "stage: refusing file name '$1'" >&2; exit 1 ;;
  esac
  printf '%s' "$2" | base64 -d | gzip -dc >"$dir/$1.new"
  mv "$dir/$1.new" "$dir/$1"
  shift 2
done
[ $# -eq 0 ] || { echo "stage: a file name without its text" >&2; exit 1; }
