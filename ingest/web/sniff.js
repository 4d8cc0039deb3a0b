// What a picked file is, from its first bytes (never from its name): the page refuses what the
// pipeline cannot decode before uploading it. The server still has the final say: a file that
// starts like a JPEG but is corrupt further on is uploaded and fails in the processor.

/** Bytes read from the start of each file (a HEIF ftyp box with its compatible brands fits). */
const HEAD_BYTES = 64;

/** HEIF brands (major or compatible), as processor/engine/sniff.py reads them: AVIF wins. */
const AVIF_BRANDS = new Set(["avif", "avis"]);
const HEIC_BRANDS = new Set(["heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs", "heif", "mif1", "msf1", "mif2", "miaf"]);

/** Content types the ingest API accepts (photoenhance/contracts/formats.py), by signature. */
const SUPPORTED = [
  { type: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { type: "image/png", test: (b) => startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) },
  { type: "image/webp", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP" },
  { type: "image/avif", test: (b) => heifBrands(b).some((brand) => AVIF_BRANDS.has(brand)) },
  { type: "image/heic", test: (b) => heifBrands(b).some((brand) => HEIC_BRANDS.has(brand)) },
];

/** Picture formats people often have, named so they know what to convert. */
const KNOWN_OTHERS = [
  { name: "GIF", test: (b) => ascii(b, 0, 4) === "GIF8" },
  { name: "BMP", test: (b) => ascii(b, 0, 2) === "BM" },
  { name: "TIFF", test: (b) => ascii(b, 0, 4) === "II*\0" || ascii(b, 0, 4) === "MM\0*" },
  { name: "PDF", test: (b) => ascii(b, 0, 5) === "%PDF-" },
];

/** The major and compatible brands of a leading ISO-BMFF ftyp box; none when there is none. */
function heifBrands(bytes) {
  if (bytes.length < 16 || ascii(bytes, 4, 8) !== "ftyp") {
    return [];
  }
  const size = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const end = Math.min(size >= 16 ? size : 16, bytes.length);
  const brands = [ascii(bytes, 8, 12)];
  for (let at = 16; at + 4 <= end; at += 4) {
    brands.push(ascii(bytes, at, at + 4));
  }
  return brands;
}

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
    return { ok: false, reason: `${other.name} files are not supported; convert it to JPEG, PNG, WebP, HEIC or AVIF.` };
  }
  return { ok: false, reason: "Not an image: only JPEG, PNG, WebP, HEIC and AVIF photos can be enhanced." };
}
