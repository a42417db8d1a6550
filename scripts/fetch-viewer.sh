#!/usr/bin/env bash
# Installs the OHIF web viewer that DicomVault serves at "/" (see src/dicomvault/webui/viewer.py).
#
# Why a prebuilt tarball: the npm package @ohif/app ships a complete production build in package/dist, so no
# Node build (and no dependency install, which fails offline) is needed. The version and the tarball's digests
# are pinned here; a tarball that does not match is refused. Idempotent: a folder already holding this exact
# build is left alone. After the check, scripts/viewer-postinstall.js patches known OHIF defects and pre-compresses
# the assets (.gz and .br).
#
# Usage: scripts/fetch-viewer.sh [DEST]
#   DEST defaults to $DICOMVAULT_VIEWER_DIR, else <repo>/.viewer/ohif (the `viewer_dir` setting's default).
set -euo pipefail

OHIF_VERSION="3.13.2"
OHIF_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
OHIF_SHASUM="26a51ffcc1704c30fff403258a1d7392e9a991f3"
STAMP_NAME=".dicomvault-viewer"
# Bump POSTINSTALL_REVISION when scripts/viewer-postinstall.js changes what it does: installs made by an older
# revision are then redone (the stamp no longer matches).
POSTINSTALL_REVISION="2"
STAMP_TEXT="@ohif/app@${OHIF_VERSION} ${OHIF_INTEGRITY} postinstall-${POSTINSTALL_REVISION}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${DICOMVAULT_VIEWER_DIR:-${repo_root}/.viewer/ohif}}"
case "$dest" in /*) ;; *) dest="$(pwd)/${dest}" ;; esac
parent="$(dirname "$dest")"
mkdir -p "$parent"

report() {
  local files size
  files="$(find "$dest" -type f | wc -l)"
  size="$(du -sh "$dest" | cut -f1)"
  echo "OHIF viewer ${OHIF_VERSION} in ${dest}: ${size} in ${files} files"
}

up_to_date() {
  [ -f "$dest/$STAMP_NAME" ] && [ "$(cat "$dest/$STAMP_NAME")" = "$STAMP_TEXT" ] && [ -f "$dest/index.html" ]
}

# Two installers at once (parallel test workers) must not interleave: serialise on a lock next to DEST.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${parent}/.fetch-viewer.lock"
  flock 9
fi

if up_to_date; then
  report
  exit 0
fi

for tool in npm node tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "fetch-viewer: '$tool' is required (install Node.js and npm)" >&2; exit 1; }
done

work="$(mktemp -d "${parent}/.fetch-viewer.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "Downloading @ohif/app@${OHIF_VERSION} with npm pack"
# --prefer-offline: a tarball already in npm's cache is used without the network. Short retries: without a network
# (or a registry) this fails in seconds, and `make serve` goes on without the viewer instead of waiting minutes.
(cd "$work" && npm pack "@ohif/app@${OHIF_VERSION}" --silent --prefer-offline --fetch-retries=1 \
  --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000 --fetch-timeout=120000 >/dev/null) \
  || { echo "fetch-viewer: npm could not download @ohif/app@${OHIF_VERSION} (no network or no registry access?)" >&2; exit 1; }
tarball="$work/ohif-app-${OHIF_VERSION}.tgz"
[ -f "$tarball" ] || { echo "fetch-viewer: npm pack did not produce $tarball" >&2; exit 1; }

# Verify both pinned digests ourselves (npm's cache check alone would trust whatever the registry serves).
read -r actual_integrity actual_shasum < <(node -e '
  const crypto = require("crypto"), fs = require("fs");
  const data = fs.readFileSync(process.argv[1]);
  console.log("sha512-" + crypto.createHash("sha512").update(data).digest("base64"),
              crypto.createHash("sha1").update(data).digest("hex"));' "$tarball")
if [ "$actual_integrity" != "$OHIF_INTEGRITY" ] || [ "$actual_shasum" != "$OHIF_SHASUM" ]; then
  echo "fetch-viewer: integrity mismatch for @ohif/app@${OHIF_VERSION}" >&2
  echo "  expected ${OHIF_INTEGRITY} / ${OHIF_SHASUM}" >&2
  echo "  got      ${actual_integrity} / ${actual_shasum}" >&2
  exit 1
fi
echo "Integrity verified (${OHIF_INTEGRITY:0:20}…, sha1 ${OHIF_SHASUM})"

tar -xzf "$tarball" -C "$work" package/dist
staged="$work/package/dist"
# Not needed by the basic viewer: onnxruntime for AI tools (136 MB), the microscopy viewer (20 MB), source maps,
# and the shipped app-config.js (it points at a public demo server; DicomVault generates its own at serve time).
rm -rf "$staged/ort" "$staged/dicom-microscopy-viewer"
find "$staged" -name '*.map' -type f -delete
rm -f "$staged/app-config.js"
# Patch known OHIF defects (each patch must match exactly) and pre-compress assets as .gz and .br.
node "${repo_root}/scripts/viewer-postinstall.js" "$staged"
printf '%s\n' "$STAMP_TEXT" > "$staged/$STAMP_NAME"

# Swap into place: the old build (if any) stays complete until the new one is ready.
if [ -e "$dest" ]; then
  mv "$dest" "$work/previous"
fi
mv "$staged" "$dest"
report
