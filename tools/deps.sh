#!/usr/bin/env bash
# Installs the Debian bookworm packages Baton builds and tests with, when missing.
# Sourced by tools/demo.sh and tools/test.sh; safe to run on its own.
set -euo pipefail

BATON_PACKAGES=(
  cmake g++ make pkg-config clang-format
  libboost-dev          # Boost.Interprocess (header-only)
  libcapnp-dev capnproto
  liburing-dev
  libbenchmark-dev
  libgtest-dev googletest
  clang-14 libclang-rt-14-dev  # the fuzz preset: clang with libFuzzer and the sanitizer runtimes
  redis-tools           # redis-benchmark and redis-cli: real clients for kvd's tests and demo
  python3-prometheus-client  # Prometheus's own text-format parser, for the metrics tests
  python3-redis         # redis-py: a real client's traffic in the shadow verification tests
  nghttp2-client curl   # h2load --h1 and curl: real HTTP/1.1 clients for samples/sessiond
  systemd               # systemd-analyze verify, for samples/kvd/kvd.service
)


baton_install_deps() {
  local missing=()
  for p in "${BATON_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    echo "deps: all ${#BATON_PACKAGES[@]} Debian packages present"
    return 0
  fi
  echo "deps: installing ${missing[*]}"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "deps: need root or sudo to install ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then baton_install_deps; fi
