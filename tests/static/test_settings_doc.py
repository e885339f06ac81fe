"""docs/local.md's table of settings against the code that reads them: every variable
batch reads, and the binding's time limit both services read, is in the table, with the
default the code gives it."""

import re

from static_support import ROOT

TABLE = {
    row[0]: row
    for row in (
        [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        for line in (ROOT / "docs/local.md").read_text().splitlines()
        if line.startswith("| `")
    )
}
READ = re.compile(r'vars\s*\.\s*(\w+)\(\s*"([A-Z][A-Z0-9_]+)"(?:\s*,\s*([0-9_]+)\b)?', re.S)


def test_every_variable_batch_reads_is_in_the_table_with_its_default():
    source = (ROOT / "src/batch/src/config.rs").read_text()
    found = READ.findall(source)
    assert len(found) >= 12, found
    for method, name, default in found:
        assert name in TABLE, f"{name} is not in docs/local.md"
        if method == "number_in" and default:
            # "`6001` / `6002`": order-processor's default, then batch's.
            documented = TABLE[name][2].replace("`", "").split(" / ")[-1].split(" ")[0]
            assert documented == default.replace("_", ""), f"{name}: {TABLE[name][2]} in the docs, {default} in the code"


def test_the_binding_time_limit_and_its_default_are_documented():
    common = (ROOT / "src/common/src/config.rs").read_text()
    name = re.search(r'BINDING_TIMEOUT_VAR: &str = "([A-Z_]+)"', common)[1]
    default = re.search(r"DEFAULT_BINDING_TIMEOUT_SECS: u64 = (\d+);", common)[1]
    assert TABLE[name][1:3] == ["both", default]
    batch = (ROOT / "src/batch/src/config.rs").read_text()
    assert re.search(r'"INVOKE_TIMEOUT_SECS",\s*least\.max\(30\)', batch), "batch's default is 30"
    assert TABLE["INVOKE_TIMEOUT_SECS"][2] == "30"
