// Builds mechwork/data/js/plotly-mechwork.min.js: plotly.js core plus only the trace types mechwork draws,
// from plotly.js's own npm sources (lib/core + lib/<trace>), minified by esbuild with the settings of
// plotly.js's esbuild-config.js. Writes plotly-mechwork.json beside it: the plotly.js version, the trace
// types and the bundle's sha256 (tests/test_bundle.py checks all three).
//
//   cd mechwork/dashboard/plotlyjs && npm ci && node build.mjs
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// scatter is in plotly's core; "scatter" also draws lines and filled areas
const TRACES = ["bar", "heatmap", "histogram", "scatter"];
const here = dirname(fileURLToPath(import.meta.url));
const plotlyDir = join(here, "node_modules", "plotly.js");
const version = JSON.parse(readFileSync(join(plotlyDir, "package.json"), "utf8")).version;
const outDir = join(here, "..", "..", "data", "js");
const bundle = join(outDir, "plotly-mechwork.min.js");

const entry = [
  "'use strict';",
  "var Plotly = require('./core');",
  `Plotly.register([${TRACES.filter((t) => t !== "scatter").map((t) => `require('./${t}')`).join(", ")}]);`,
  "module.exports = Plotly;",
].join("\n");

const banner = [
  "/**",
  `* plotly.js v${version} (partial bundle: ${TRACES.join(", ")} - minified)`,
  "* Copyright 2012-2026, Plotly, Inc.",
  "* All rights reserved.",
  "* Licensed under the MIT license",
  "*/",
].join("\n");

// registry.js requires maplibre's stylesheet for map traces only; none is registered here, so it is empty
const noCss = {
  name: "no-map-css",
  setup(b) {
    b.onResolve({ filter: /\.css$/ }, (a) => ({ path: a.path, namespace: "no-map-css" }));
    b.onLoad({ filter: /.*/, namespace: "no-map-css" }, () => ({ contents: "", loader: "js" }));
  },
};

const result = await build({
  stdin: { contents: entry, resolveDir: join(plotlyDir, "lib"), sourcefile: "mechwork-plotly.js" },
  bundle: true,
  format: "iife",
  globalName: "Plotly",
  minify: true,
  target: "es2016",
  define: { global: "window", "define.amd": "false", "process.env.NODE_DEBUG": "false" },
  plugins: [noCss],
  alias: { stream: "stream-browserify" },
  banner: { js: banner },
  footer: { js: "window.Plotly = Plotly;" },
  legalComments: "eof",
  write: false,
  logLevel: "warning",
});
const code = result.outputFiles[0].contents;
mkdirSync(outDir, { recursive: true });
writeFileSync(bundle, code);
const sha256 = createHash("sha256").update(code).digest("hex");
const manifest = { "plotly.js": version, traces: TRACES, file: "plotly-mechwork.min.js", bytes: code.length, sha256 };
writeFileSync(join(outDir, "plotly-mechwork.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`${bundle}: ${code.length} bytes, sha256 ${sha256}`);
