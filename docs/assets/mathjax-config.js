// MathJax settings for pymdownx.arithmatex (generic mode): typeset only the math it marks.
// The MathJax script itself is served from this site (assets/mathjax/tex-svg.js), not from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
