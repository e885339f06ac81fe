// Parses and analyses Kusto queries with Kusto.Language, Microsoft's Kusto parser and
// analyzer (the npm build of the .NET library the Azure portal's editors use), against
// the tables it is given: a syntax error, an unknown table, column or function, or a
// wrong argument type is a diagnostic, as in the portal.
//
//   node check.js NODE_PREFIX < {"tables": {"T": "(Col:type, ...)"}, "queries": {"name": "T | ..."}}
//
// NODE_PREFIX is the folder whose node_modules holds @kusto/language-service-next (npm ci of
// package-lock.json, tests/infra/kusto.py). Prints {"name": ["Error 12: message", ...]} with the
// diagnostics of each query (none: an empty list); errors and warnings alike.
"use strict";

const fs = require("fs");
const path = require("path");

const dir = path.join(process.argv[2], "node_modules", "@kusto", "language-service-next");
require(path.join(dir, "bridge.js"));
require(path.join(dir, "Kusto.Language.Bridge.js"));
const K = global.Kusto.Language;

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const tables = Object.entries(input.tables).map(
  ([name, schema]) => new K.Symbols.TableSymbol.$ctor7(name, schema, null),
);
const globals = K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.$ctor2("workspace", null, tables));

const result = {};
for (const [name, text] of Object.entries(input.queries)) {
  const diagnostics = K.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
  result[name] = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    result[name].push(`${d.Severity} at ${d.Start}: ${d.Message}`);
  }
}
process.stdout.write(JSON.stringify(result));
