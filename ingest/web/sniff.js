// What a picked file is, from its first bytes (never from its name): the page refuses what the
// pipeline cannot decode before uploading it. The server still has the final say: a file that
// starts like a JPEG but is corrupt further on is uploaded and fails in the processor.

/** Bytes read from the start of each file. */
const HEAD_BYTES = 16;

/** Content types the ingest API accepts, by signature. */
const SUPPORTED = [
  { type: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { type: "image/png", test: (b) => startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) },
  { type: "image/webp", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP" },
];

/** Picture formats people often have, named so they know what to convert. */
const KNOWN_OTHERS = [
  { name: "GIF", test: (b) => ascii(b, 0, 4) === "GIF8" },
  { name: "BMP", test: (b) => ascii(b, 0, 2) === "BM" },
  { name: "TIFF", test: (b) => ascii(b, 0, 4) === "II*\0" || ascii(b, 0, 4) === "MM\0*" },
  { name: "HEIC", test: (b) => ascii(b, 4, 8) === "ftyp" && /^(heic|heix|hevc|heif|mif1|msf1)$/.test(ascii(b, 8, 12)) },
  { name: "AVIF", test: (b) => ascii(b, 4, 8) === "ftyp" && /^avi[fs]$/.test(ascii(b, 8, 12)) },
  { name: "PDF", test: (b) => ascii(b, 0, 5) === "%PDF-" },
];

function startsWith(bytes, prefix) {
  return prefix.every((value, i) => bytes[i] === value);
}

function ascii(bytes, from, to) {
  return String.fromCharCode(...bytes.slice(from, to));
}

/**
 * Decide whether a file can be uploaded.
 * @param {File} file
 * @returns {Promise<{ok: true, contentType: string} | {ok: false, reason: string}>}
 */
export async function sniffFile(file) {
  if (file.size === 0) {
    return { ok: false, reason: "The file is empty." };
  }
  let bytes;
  try {
    bytes = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
  } catch (error) {
    return { ok: false, reason: "The file could not be read from your disk." };
  }
  const match = SUPPORTED.find((format) => format.test(bytes));
  if (match) {
    return { ok: true, contentType: match.type };
  }
  const other = KNOWN_OTHERS.find((format) => format.test(bytes));
  if (other) {
    return { ok: false, reason: `${other.name} files are not supported; convert it to JPEG, PNG or WebP.` };
  }
  return { ok: false, reason: "Not an image: only JPEG, PNG and WebP photos can be enhanced." };
}
