// A before/after comparison: the result underneath, the original on top, cut at a position set
// with a range input (so it works with the keyboard: arrows, Home, End, Page Up/Down).

let counter = 0;

/**
 * @param {{before: string, after: string, name: string}} images object URL of the picked file,
 *   link to the result, and the file's name (shown with textContent only)
 * @returns {HTMLElement}
 */
export function createCompare({ before, after, name }) {
  counter += 1;
  const figure = document.createElement("figure");
  figure.className = "compare";

  const frame = document.createElement("div");
  frame.className = "compare-frame";
  frame.style.setProperty("--pos", "50%");

  const afterImage = document.createElement("img");
  afterImage.className = "compare-after";
  afterImage.src = after;
  afterImage.alt = `After: ${name}`;
  afterImage.decoding = "async";

  const beforeImage = document.createElement("img");
  beforeImage.className = "compare-before";
  beforeImage.src = before;
  beforeImage.alt = `Before: ${name}`;

  const labels = document.createElement("div");
  labels.className = "compare-labels";
  labels.setAttribute("aria-hidden", "true");
  for (const word of ["Before", "After"]) {
    const span = document.createElement("span");
    span.textContent = word;
    labels.append(span);
  }
  frame.append(afterImage, beforeImage, labels);

  const id = `compare-${counter}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.className = "compare-label";
  label.textContent = `Before / after position for ${name}`;
  const range = document.createElement("input");
  range.type = "range";
  range.id = id;
  range.min = "0";
  range.max = "100";
  range.value = "50";
  range.className = "compare-range";
  range.setAttribute("aria-valuetext", "50% before");
  range.addEventListener("input", () => {
    frame.style.setProperty("--pos", `${range.value}%`);
    range.setAttribute("aria-valuetext", `${range.value}% before`);
  });

  figure.append(frame, label, range);
  return figure;
}
