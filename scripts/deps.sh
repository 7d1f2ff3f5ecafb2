#!/usr/bin/env bash
# Installs the Debian packages hearth's build and tests need, only if something is missing.
# Used by `make deps` (which `make test` and `make serve` call) and by .ci/run.
set -eu
need=()
have_header() { printf '#include <%s>\n' "$1" | ${CC:-cc} -E -x c - >/dev/null 2>&1; }
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v clang >/dev/null 2>&1 || need+=(clang libclang-rt-dev)
have_header jansson.h || need+=(libjansson-dev)
have_header microhttpd.h || need+=(libmicrohttpd-dev)
have_header curl/curl.h || need+=(libcurl4-openssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
/usr/bin/python3 -c 'import jinja2' >/dev/null 2>&1 || need+=(python3 python3-jinja2)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "hearth: missing packages (${need[*]}) and no apt-get; install them by hand" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "hearth: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
