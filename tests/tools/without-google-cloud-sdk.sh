#!/bin/sh
# Runs a command with the machine image's google-cloud-sdk hidden: in a private mount
# namespace (unshare -m) with an empty tmpfs over /usr/lib/google-cloud-sdk, so its
# kubectl binaries (and /usr/bin/kubectl, a link into it) are gone for the command and
# everything it starts. `make test` runs the whole suite this way: it proves the suite
# needs only the kubectl that `make tools` installs under .tools/.
#
# Usage: tests/tools/without-google-cloud-sdk.sh COMMAND [ARG...]
# Sets KUBEGATE_GOOGLE_CLOUD_SDK_HIDDEN=1 for the command when the directory is hidden
# (a harness test then checks that it is). Without root, or on a machine without that
# directory, the command runs as it is, after a note.
set -eu
SDK=/usr/lib/google-cloud-sdk

if [ ! -d "$SDK" ]; then
  echo "without-google-cloud-sdk: no $SDK on this machine: nothing to hide" >&2
  exec "$@"
fi
if [ "$(id -u)" != 0 ]; then
  echo "without-google-cloud-sdk: not root, so $SDK stays visible (the suite does not use it)" >&2
  exec "$@"
fi
exec unshare --mount --propagation private sh -c '
  set -eu
  mount -t tmpfs -o size=1m,mode=0755 kubegate-hides-google-cloud-sdk "$0"
  if [ -n "$(ls -A "$0")" ]; then echo "without-google-cloud-sdk: $0 is still visible" >&2; exit 1; fi
  echo "without-google-cloud-sdk: $0 is hidden (an empty tmpfs in a private mount namespace)" >&2
  KUBEGATE_GOOGLE_CLOUD_SDK_HIDDEN=1 exec "$@"
' "$SDK" "$@"
