#!/usr/bin/env bash
# Installs the external programs the test suite drives: dcmtk's storescu/findscu/getscu/movescu/echoscu, and
# Chromium for the web viewer's browser tests (driven by Playwright through executable_path; never a downloaded browser).
# The PostgreSQL and S3 servers themselves are started by the test fixtures (see tests/pg_fixture.py, tests/s3_fixture.py).
set -euo pipefail
missing=()
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The PostgreSQL tests use the server on 127.0.0.1:5432 when one answers, else a throwaway cluster made from the
# Debian package's binaries: make sure they exist.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing test dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "The tests need: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
