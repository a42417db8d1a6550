// The upload page: files and folders go to STOW-RS in batches, zip files to /ui/api/upload-zip; one result per file.
"use strict";
(() => {
  const root = document.getElementById("upload");
  if (!root) return;
  const BATCH_FILES = Number(root.dataset.batchFiles) || 20;
  const BATCH_BYTES = Number(root.dataset.batchBytes) || 50e6;
  const IGNORED = new Set([".DS_Store", "Thumbs.db", "desktop.ini"]);
  // STOW-RS Failure / Warning Reasons (PS3.18 Table I.2-2) as words.
  const REASONS = {
    0xA700: "out of resources (try again later)", 0xA701: "too large", 0xA900: "data set does not match its SOP class",
    0xA901: "belongs to another study", 0xC000: "not a readable DICOM object", 0x0111: "another object has this UID",
    0x0110: "processing failure", 0xB000: "an earlier object with this UID was replaced or kept as a version",
    0xB007: "stored, but its pixel data is short",
  };
  const $ = (id) => document.getElementById(id);
  const progress = $("progress"), statusLine = $("status"), tbody = $("results").querySelector("tbody");
  const studies = new Set();
  let totals = { bytes: 0, sent: 0 }, counts = {}, busy = Promise.resolve();

  const label = (file) => file.relativePath || file.webkitRelativePath || file.name;
  const size = (n) => n < 1e3 ? `${n} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`;

  function addRow(name, bytes, status, reason) {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[name, ""], [bytes == null ? "" : size(bytes), "num"], [status, status], [reason || "", ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    $("results").hidden = false;
    counts[status] = (counts[status] || 0) + 1;
    $("summary").hidden = false;
    $("summary").textContent = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ");
  }

  function addStudy(uid) {
    if (!uid || studies.has(uid)) return;
    studies.add(uid);
    const li = document.createElement("li"), a = document.createElement("a");
    a.href = `/ui/studies/${encodeURIComponent(uid)}`;
    a.textContent = uid;
    li.appendChild(a);
    $("studies").appendChild(li);
    $("studies-box").hidden = false;
  }

  function showProgress(extra = 0) {
    $("progress-box").hidden = false;
    progress.max = Math.max(totals.bytes, 1);
    progress.value = Math.min(totals.sent + extra, progress.max);
  }

  // The SOP Instance UID of a Part 10 file, from its File Meta Information (explicit VR little endian), or "".
  async function sopUid(file) {
    const buf = new DataView(await file.slice(0, 8192).arrayBuffer());
    if (buf.byteLength < 140 || String.fromCharCode(...[128, 129, 130, 131].map((i) => buf.getUint8(i))) !== "DICM") return "";
    let pos = 132;
    while (pos + 8 <= buf.byteLength) {
      const group = buf.getUint16(pos, true), element = buf.getUint16(pos + 2, true);
      if (group !== 0x0002) break;
      const vr = String.fromCharCode(buf.getUint8(pos + 4), buf.getUint8(pos + 5));
      let length, start;
      if (["OB", "OW", "OF", "SQ", "UT", "UN"].includes(vr)) {
        if (pos + 12 > buf.byteLength) break;
        length = buf.getUint32(pos + 8, true); start = pos + 12;
      } else {
        length = buf.getUint16(pos + 6, true); start = pos + 8;
      }
      if (start + length > buf.byteLength) break;
      if (element === 0x0003) {
        let uid = "";
        for (let i = 0; i < length; i++) uid += String.fromCharCode(buf.getUint8(start + i));
        return uid.replace(/[\0 ]+$/, "");
      }
      pos = start + length;
    }
    return "";
  }

  // Which of these SOP Instance UIDs the archive holds already (QIDO-RS), so that a success can say "duplicate".
  async function alreadyStored(uids) {
    const known = new Set(), list = uids.filter(Boolean);
    if (!list.length) return known;
    const url = `/dicom-web/instances?SOPInstanceUID=${encodeURIComponent(list.join(","))}&includefield=00080018&limit=${list.length}`;
    try {
      const answer = await window.dicomvault.fetch(url, { headers: { Accept: "application/dicom+json" } });
      if (answer.status === 200) {
        for (const item of await answer.json()) {
          const v = item["00080018"] && item["00080018"].Value;
          if (v) known.add(v[0]);
        }
      }
    } catch (e) { /* no answer: successes are reported as stored */ }
    return known;
  }

  function post(url, body, contentType, onProgress) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("Content-Type", contentType);
      xhr.setRequestHeader("Accept", "application/dicom+json, application/json");
      xhr.setRequestHeader("X-CSRF-Token", window.dicomvault.csrf());
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        let json = null;
        try { json = JSON.parse(xhr.responseText); } catch (e) { json = null; }
        resolve({ status: xhr.status, json });
      };
      xhr.onerror = () => resolve({ status: 0, json: null });
      xhr.send(body);
    });
  }

  const first = (item, tag) => (item && item[tag] && item[tag].Value ? item[tag].Value[0] : undefined);

  async function sendBatch(files) {
    const uids = await Promise.all(files.map(sopUid));
    const before = await alreadyStored(uids);
    const boundary = "dvupload" + Math.random().toString(16).slice(2) + Date.now().toString(16);
    const parts = [];
    for (const f of files) parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, f, "\r\n");
    parts.push(`--${boundary}--\r\n`);
    const bytes = files.reduce((n, f) => n + f.size, 0);
    statusLine.textContent = `Sending ${files.length} file(s)…`;
    const answer = await post("/dicom-web/studies", new Blob(parts),
      `multipart/related; type="application/dicom"; boundary=${boundary}`, (loaded) => showProgress(Math.min(loaded, bytes)));
    totals.sent += bytes;
    showProgress();
    const body = answer.json;
    if (!body || !(body["00081199"] || body["00081198"])) {
      const why = body && body.error ? body.error : `HTTP ${answer.status || "connection failed"}`;
      files.forEach((f) => addRow(label(f), f.size, "rejected", why));
      return;
    }
    const byUid = new Map(), unmatched = [];
    files.forEach((f, i) => (uids[i] && !byUid.has(uids[i]) ? byUid.set(uids[i], f) : unmatched.push(f)));
    const take = (uid) => {
      const f = byUid.get(uid);
      if (f) { byUid.delete(uid); return f; }
      return unmatched.shift();
    };
    for (const item of (body["00081199"] || {}).Value || []) {
      const uid = first(item, "00081155"), f = take(uid), warning = first(item, "00081196");
      const url = first(item, "00081190");
      const match = url && /\/studies\/([0-9.]+)\//.exec(url);
      if (match) addStudy(match[1]);
      const status = warning != null ? (warning === 0xB000 ? "replaced" : "stored") : before.has(uid) ? "duplicate" : "stored";
      const reason = warning != null ? (first(item, "00000902") || REASONS[warning] || `warning 0x${warning.toString(16)}`) : "";
      addRow(f ? label(f) : uid, f ? f.size : null, status, reason);
    }
    for (const item of (body["00081198"] || {}).Value || []) {
      const uid = first(item, "00081155"), f = take(uid), code = first(item, "00081197");
      const reason = first(item, "00000902") || REASONS[code] || (code != null ? `failure 0x${code.toString(16)}` : "refused");
      addRow(f ? label(f) : uid || "(unnamed)", f ? f.size : null, "rejected", reason);
    }
    for (const f of [...byUid.values(), ...unmatched]) addRow(label(f), f.size, "rejected", "not in the archive's answer");
  }

  async function sendZip(file) {
    statusLine.textContent = `Sending ${file.name}; the archive unpacks it…`;
    const answer = await post("/ui/api/upload-zip", file, "application/zip", (loaded) => showProgress(loaded));
    totals.sent += file.size;
    showProgress();
    const body = answer.json;
    if (!body || !Array.isArray(body.files)) {
      addRow(label(file), file.size, "rejected", (body && body.error) || `HTTP ${answer.status || "connection failed"}`);
      return;
    }
    for (const r of body.files) {
      addRow(`${label(file)} › ${r.name}`, null, r.status, r.reason);
      if (r.study_uid) addStudy(r.study_uid);
    }
  }

  async function upload(all) {
    const files = all.filter((f) => !IGNORED.has(f.name) && !f.name.startsWith("._"));
    const zips = files.filter((f) => /\.zip$/i.test(f.name) || f.type === "application/zip" || f.type === "application/x-zip-compressed");
    const dicom = files.filter((f) => !zips.includes(f));
    totals.bytes += files.reduce((n, f) => n + f.size, 0);
    showProgress();
    let batch = [], batchBytes = 0;
    for (const f of dicom) {
      if (batch.length && (batch.length >= BATCH_FILES || batchBytes + f.size > BATCH_BYTES)) {
        await sendBatch(batch);
        batch = []; batchBytes = 0;
      }
      batch.push(f); batchBytes += f.size;
    }
    if (batch.length) await sendBatch(batch);
    for (const z of zips) await sendZip(z);
    statusLine.textContent = "Done.";
  }

  function queue(files) {
    if (!files.length) return;
    busy = busy.then(() => upload(files)).catch((e) => { statusLine.textContent = `Upload stopped: ${e}`; });
  }

  // Folders dropped: walk them (DataTransferItem.webkitGetAsEntry), keeping each file's path for the table.
  async function entries(entry, path) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      file.relativePath = path + file.name;
      return [file];
    }
    const reader = entry.createReader(), out = [];
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) out.push(...await entries(child, `${path}${entry.name}/`));
    }
    return out;
  }

  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const items = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (items.length) {
      const found = [];
      for (const entry of items) found.push(...await entries(entry, ""));
      queue(found);
    } else {
      queue([...e.dataTransfer.files]);
    }
  });
  for (const id of ["pick-files", "pick-folder"]) {
    $(id).addEventListener("change", (e) => { queue([...e.target.files]); e.target.value = ""; });
  }
})();
