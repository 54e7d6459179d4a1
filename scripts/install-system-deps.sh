#!/usr/bin/env bash
# Installs the system packages K2's tests and demo need, from the machine's package manager:
# PostgreSQL server binaries (initdb/pg_ctl), Prometheus' promtool and Chromium (the console's browser tests drive
# /usr/bin/chromium through Playwright). Idempotent; quiet when present.
set -euo pipefail

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

need=()
have_pg || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "K2 needs: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# promtool is optional: a failure to install prometheus only skips the promtool checks.
if printf '%s\n' "${need[@]}" | grep -qx postgresql; then
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
if printf '%s\n' "${need[@]}" | grep -qx prometheus; then
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null || echo "warning: prometheus (promtool) not installed" >&2
fi
if printf '%s\n' "${need[@]}" | grep -qx chromium; then
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
