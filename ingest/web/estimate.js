// How long the enhancement will take: each level's measured speed (GET /api/v1/capabilities,
// median seconds per input megapixel over the live workers serving it) times the photos'
// megapixels, taken from the images' natural sizes as the browser decodes them.

/** Photo size in megapixels, or null when the browser cannot decode it (HEIC in most browsers). */
export function measureMegapixels(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const image = new Image();
    const done = (value) => {
      URL.revokeObjectURL(url);
      resolve(value);
    };
    image.addEventListener("load", () => done((image.naturalWidth * image.naturalHeight) / 1e6));
    image.addEventListener("error", () => done(null));
    image.src = url;
  });
}

/** "under a second", "about 40 s", "about 3 min", "about 1 h 40 min". */
export function formatDuration(seconds) {
  if (seconds < 1) return "under a second";
  if (seconds < 90) return `about ${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `about ${minutes} min`;
  return `about ${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** Seconds for photos of `megapixels` at `speed` s/MP (null: no speed measured). Unreadable sizes count as 0. */
export function secondsFor(speed, megapixels) {
  if (speed === null || speed === undefined) return null;
  return speed * megapixels.reduce((sum, mp) => sum + (mp || 0), 0);
}

/** The capabilities' entry of one level (undefined when absent or no document). */
export function levelEntry(caps, level) {
  return caps ? caps.levels.find((entry) => entry.level === level) : undefined;
}

/** What a person reads for one level's estimate for the chosen photos. */
export function describeLevel(entry, megapixels) {
  if (!entry.served) return "not available now";
  const seconds = secondsFor(entry.seconds_per_megapixel, megapixels);
  if (seconds !== null) return formatDuration(seconds);
  return entry.workers ? "no estimate yet (not measured)" : "no estimate (no worker running now)";
}
