// Render the maths that pymdownx.arithmatex marks (generic mode: \( ... \) inline and \[ ... \]
// display, each in an element of class "arithmatex") with the KaTeX shipped in docs/vendor/katex:
// no CDN, so the formulas show offline. document$ is Material's page-load observable.
document$.subscribe(({ body }) => {
  for (const el of body.querySelectorAll(".arithmatex")) {
    const tex = el.textContent.trim();
    const display = tex.startsWith("\\[");
    // A formula KaTeX cannot parse shows as red source text, not as a script error.
    katex.render(tex.slice(2, -2), el, { displayMode: display, throwOnError: false });
  }
});
