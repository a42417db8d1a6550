// Post-install steps for the OHIF build that scripts/fetch-viewer.sh unpacked (run by it with Node, which it needs
// anyway; no npm package is used). Usage: node scripts/viewer-postinstall.js DIST
//
// 1. Patch (why: see PATCHES below). Each patch names the exact text it replaces and must match exactly once, so a
//    different OHIF version fails loudly here instead of being served half-patched. A patched bundle gets a new
//    content-hashed name (and index.html / sw.js are rewritten to it), so no browser keeps the unpatched file from
//    its year-long cache.
// 2. Pre-compress text and wasm assets (gzip and Brotli, both from Node's zlib) once, so the server sends them
//    encoded without per-request CPU. Brotli is ~25 % smaller than gzip -9 on OHIF's bundles. Files over 1 MB get
//    quality 10 (on the 17 MB application bundle: 2.51 MB in 14 s, where quality 11 gives 2.45 MB in 27 s).
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const zlib = require("zlib");

const PATCHES = [
  {
    // OHIF's getModalities (platform/core/src/DICOMWeb/getModalities.js) reads ModalitiesInStudy.Value.length
    // without checking that Value exists. A study whose series have no Modality has an empty Modalities in Study,
    // which DICOM JSON encodes as {"vr": "CS"} with no Value (PS3.18 F.2.5; the attribute is a required return
    // key of a QIDO-RS study search, PS3.18 Table 10.6.3-3, so it cannot be left out). Unpatched, one such study
    // makes the whole study list fail ("Cannot read properties of undefined (reading 'length')").
    name: "getModalities: empty ModalitiesInStudy",
    file: /^app\.bundle\.[0-9a-f]{16}\.js$/,
    from: "for (let i = 0; i < ModalitiesInStudy.Value.length; i++) {",
    to: "for (let i = 0; i < (ModalitiesInStudy.Value || []).length; i++) {",
  },
];

const COMPRESSIBLE = /\.(js|css|wasm|json|svg|html|txt|xml|mjs)$/;
const MIN_SIZE = 1024;

function patch(dist) {
  const names = fs.readdirSync(dist);
  const renamed = new Map();
  for (const p of PATCHES) {
    const matches = names.filter((n) => p.file.test(n));
    if (matches.length !== 1) throw new Error(`patch '${p.name}': expected one file matching ${p.file}, found ${matches.length}`);
    const name = renamed.get(matches[0]) || matches[0];
    const file = path.join(dist, name);
    const text = fs.readFileSync(file, "utf8");
    const count = text.split(p.from).length - 1;
    if (count !== 1) throw new Error(`patch '${p.name}': expected the original text once in ${name}, found ${count}`);
    const patched = text.replace(p.from, p.to);
    const digest = crypto.createHash("sha256").update(patched).digest("hex").slice(0, 16);
    const newName = name.replace(/\.[0-9a-f]{16}\.js$/, `.${digest}.js`);
    fs.writeFileSync(path.join(dist, newName), patched);
    if (newName !== name) fs.unlinkSync(file);
    renamed.set(matches[0], newName);
    console.log(`Patched ${p.name}: ${matches[0]} -> ${newName}`);
  }
  // References to a renamed bundle: the page and the (inert) service worker's precache list.
  for (const ref of ["index.html", "sw.js"]) {
    const file = path.join(dist, ref);
    if (!fs.existsSync(file)) continue;
    let text = fs.readFileSync(file, "utf8");
    for (const [from, to] of renamed) text = text.split(from).join(to);
    fs.writeFileSync(file, text);
  }
}

function* walk(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(full);
    else if (entry.isFile()) yield full;
  }
}

function compress(dist) {
  let files = 0, raw = 0, br = 0;
  for (const file of walk(dist)) {
    if (!COMPRESSIBLE.test(file) || file.endsWith(".gz") || file.endsWith(".br")) continue;
    const data = fs.readFileSync(file);
    if (data.length < MIN_SIZE) continue;
    const gz = zlib.gzipSync(data, { level: 9 });
    const brotli = zlib.brotliCompressSync(data, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: data.length > 1e6 ? 10 : 11,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
        [zlib.constants.BROTLI_PARAM_MODE]: file.endsWith(".wasm") ? zlib.constants.BROTLI_MODE_GENERIC : zlib.constants.BROTLI_MODE_TEXT,
      },
    });
    // An encoding that saves nothing is not stored (the server then sends the file as it is).
    if (gz.length < data.length) fs.writeFileSync(file + ".gz", gz);
    if (brotli.length < data.length) fs.writeFileSync(file + ".br", brotli);
    files += 1; raw += data.length; br += Math.min(brotli.length, data.length);
  }
  console.log(`Pre-compressed ${files} files: ${(raw / 1e6).toFixed(1)} MB -> ${(br / 1e6).toFixed(1)} MB with Brotli`);
}

const dist = process.argv[2];
if (!dist || !fs.existsSync(path.join(dist, "index.html"))) {
  console.error("usage: node scripts/viewer-postinstall.js DIST (an unpacked OHIF dist/ folder)");
  process.exit(2);
}
patch(dist);
compress(dist);
