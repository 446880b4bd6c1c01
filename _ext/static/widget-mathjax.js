// Widget labels throw on pages that load MathJax 3.
//
// The ipywidgets HTML manager typesets every widget label with MathJax 2's
// `MathJax.Hub.Queue`, and MathJax 3 has no `Hub`. This script adds a hidden
// `Hub.Queue` that typesets with MathJax 3 to every value assigned to `window.MathJax`:
// the configuration before MathJax loads and MathJax itself afterwards.
(() => {
  const hub = {
    Queue(job) {
      const element = Array.isArray(job) ? job[2] : undefined;
      const mathjax = current;
      // Before MathJax has loaded there is nothing to do: its first pass covers the page.
      if (element && mathjax && typeof mathjax.typesetPromise === "function") {
        mathjax.typesetPromise([element]).catch((error) => {
          console.warn("MathJax could not typeset a widget label:", error);
        });
      }
    },
  };

  const withHub = (value) => {
    if (value && typeof value === "object" && !("Hub" in value)) {
      // Not enumerable, so MathJax 3 does not read it as a configuration block.
      Object.defineProperty(value, "Hub", { value: hub, configurable: true });
    }
    return value;
  };

  let current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (value) => {
      current = withHub(value);
    },
  });
})();
