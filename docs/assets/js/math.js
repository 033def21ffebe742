// Typesets the mathematics of every page with the KaTeX copy in docs/assets/katex (nothing is fetched from a CDN).
// pymdownx.arithmatex (generic mode) leaves each formula as the text \(...\) in a <span class="arithmatex"> or
// \[...\] in a <div class="arithmatex">; each is replaced by KaTeX's rendering. A formula KaTeX cannot parse keeps its
// source and gets the class "math-error", which the site check (.ci/check_docs.py) fails on.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    var tex = el.textContent.trim();
    var display = tex.startsWith("\\[");
    tex = tex.slice(2, -2);
    try {
      katex.render(tex, el, { displayMode: display, throwOnError: true });
    } catch (err) {
      el.classList.add("math-error");
      el.title = String(err);
    }
  });
});
