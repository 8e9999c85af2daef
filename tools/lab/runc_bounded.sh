#!/bin/sh
# The runtime tools/lab/runc_bounded.py names for a lab dockerd: runc, with a new container's
# config first bounded by runc_bounded.py. Only create and run need it; every other call
# (state, start, kill, delete: several per container) goes straight to runc, without
# Python's start-up (a second per container on this busy machine).
for arg in "$@"; do
  case $arg in
    create | run) exec python3 -I -S "$(dirname "$0")/runc_bounded.py" "$@" ;;
  esac
done
exec runc "$@"
