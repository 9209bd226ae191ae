#!/usr/bin/env bash
# Debian packages kdaudit uses: the Fashion-MNIST data set of the default audit, and headless
# Chromium for the report's browser test. Installs what is missing when it can (root or sudo);
# otherwise says what to install and carries on (the audit then explains what is missing and
# the browser test is skipped).
set -u
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "kdaudit: please install the Debian packages: ${need[*]}" >&2
  exit 0
fi
echo "kdaudit: installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null || {
  echo "kdaudit: could not install ${need[*]}; install them by hand" >&2
  exit 0
}
