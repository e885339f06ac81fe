"""What the Bicep in infra/ asks Azure for, read from the files themselves at run time, so
that the preflight (preflight.py) checks what will be deployed and the Bicep stays the one
place where it is said: the regions `location` allows, the PostgreSQL version, SKU and
tier, the API versions, and the cores the container apps and jobs ask for.

Bicep is not parsed in full: a small reader takes object and array literals apart and
evaluates literals ('text', 1, 0.5, json('0.25'), true), and follows a name through the
file's params and vars, the params main.bicep passes to the module, and main.bicep's own
params as azd sets them (infra/main.parameters.json: a value, or "${VAR}" / "${VAR=default}"
taken from the azd environment), else their defaults. Whatever it cannot tell raises
Unreadable, naming the file and the expression: the check that needed it is then skipped,
with a warning, rather than made against a guess.

Standard library only, Python 3.8 or newer, like the hooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from azure_api import HookFailure

# What ARM assumes when a container app's template.scale says nothing.
DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 10
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?::?[=-](?P<default>[^}]*))?\}")


class Unreadable(HookFailure):
    """Something infra/ says that this reader cannot tell."""


def without_comments(text: str) -> str:
    """The text with // and /* */ comments blanked out (strings left alone), so that
    offsets stay the same."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'":
            i = skip_string(text, i)
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out[i:end] = [c if c == "\n" else " " for c in text[i:end]]
            i = end
            continue
        i += 1
    return "".join(out)


def skip_string(text: str, i: int) -> int:
    """The offset after the string literal that starts at text[i] ("'"), interpolations
    (${...}, which may hold strings) included; a multi-line string ('''...''') whole."""
    if text.startswith("'''", i):
        end = text.find("'''", i + 3)
        if end < 0:
            raise Unreadable("a multi-line string does not end")
        return end + 3
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif c == "'":
            return i + 1
        elif text.startswith("${", i):
            i = skip_expression(text, i + 2, closer="}") + 1
        else:
            i += 1
    raise Unreadable("a string literal does not end")


def skip_expression(text: str, i: int, closer: str = "") -> int:
    """The offset where an expression that starts at text[i] ends: at `closer` at depth 0
    when one is given, else at a newline, ',' or a closing bracket at depth 0."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "'":
            i = skip_string(text, i)
            continue
        if depth == 0 and (c == closer or (not closer and c in "\n,")):
            return i
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return i


def skip_blank(text: str, i: int, separators: str = " \t\r\n") -> int:
    while i < len(text) and text[i] in separators:
        i += 1
    return i


def parse_value(text: str, i: int) -> Tuple[Any, int]:
    """An object literal as a dict, an array literal as a list, anything else as the text
    of its expression; and the offset after it."""
    i = skip_blank(text, i)
    if i >= len(text):
        raise Unreadable("a value is missing at the end of the file")
    if text[i] == "{":
        return parse_object(text, i)
    if text[i] == "[":
        return parse_array(text, i)
    end = skip_expression(text, i)
    return text[i:end].strip(), end


def parse_object(text: str, i: int) -> Tuple[Dict[str, Any], int]:
    result: Dict[str, Any] = {}
    i += 1
    while True:
        i = skip_blank(text, i, " \t\r\n,")
        if i >= len(text):
            raise Unreadable("an object literal does not end")
        if text[i] == "}":
            return result, i + 1
        if text[i] == "'":
            end = skip_string(text, i)
            key = text[i + 1:end - 1]
        else:
            match = IDENTIFIER.match(text, i)
            if match is None:
                raise Unreadable(f"cannot read the object key at {text[i:i + 30]!r}")
            key, end = match.group(), match.end()
        i = skip_blank(text, end, " \t")
        if i >= len(text) or text[i] != ":":
            raise Unreadable(f"no ':' after the object key {key!r}")
        result[key], i = parse_value(text, i + 1)


def parse_array(text: str, i: int) -> Tuple[List[Any], int]:
    result: List[Any] = []
    i += 1
    while True:
        i = skip_blank(text, i, " \t\r\n,")
        if i >= len(text):
            raise Unreadable("an array literal does not end")
        if text[i] == "]":
            return result, i + 1
        if text.startswith("for ", i):
            raise Unreadable("a for-expression")
        value, i = parse_value(text, i)
        result.append(value)


def literal(expression: Any) -> Optional[Any]:
    """The value of a literal expression ('text' without interpolation, a number,
    json('0.25'), true, false), else None."""
    if not isinstance(expression, str):
        return None
    text = expression.strip()
    match = re.fullmatch(r"'((?:[^'\\$]|\\.|\$(?!\{))*)'", text)
    if match:
        return re.sub(r"\\(.)", r"\1", match.group(1))
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    match = re.fullmatch(r"json\(\s*'(-?\d+(?:\.\d+)?)'\s*\)", text)
    if match:
        return float(match.group(1))
    if text in ("true", "false"):
        return text == "true"
    return None


class Resource:
    """A resource a Bicep file declares (not an `existing` one)."""

    def __init__(self, file: "BicepFile", kind: str, api_version: str, body: Dict[str, Any]) -> None:
        self.file = file
        self.kind = kind
        self.api_version = api_version
        self.body = body

    def get(self, *path: Any) -> Any:
        """The value at a path of keys and indexes in the resource's body, or None."""
        value: Any = self.body
        for step in path:
            if isinstance(step, int):
                value = value[step] if isinstance(value, list) and step < len(value) else None
            else:
                value = value.get(step) if isinstance(value, dict) else None
            if value is None:
                return None
        return value


class BicepFile:
    """One .bicep file of infra/: its params, vars, resources and module calls."""

    def __init__(self, path: Path, infra: Path) -> None:
        self.path = path
        self.name = path.relative_to(infra).as_posix()
        self.text = without_comments(path.read_text(encoding="utf-8"))

    def declaration(self, keyword: str, name: str) -> Optional[re.Match]:
        return re.search(rf"^[ \t]*{keyword}[ \t]+{re.escape(name)}\b", self.text, re.MULTILINE)

    def param_default(self, name: str) -> Optional[Any]:
        """The default expression of `param name`, or None when it has none (or no such param)."""
        match = re.search(rf"^[ \t]*param[ \t]+{re.escape(name)}[ \t]+[\w.]+[ \t]*=", self.text, re.MULTILINE)
        return parse_value(self.text, match.end())[0] if match else None

    def var(self, name: str) -> Optional[Any]:
        match = re.search(rf"^[ \t]*var[ \t]+{re.escape(name)}[ \t]*=", self.text, re.MULTILINE)
        return parse_value(self.text, match.end())[0] if match else None

    def allowed(self, param: str) -> List[str]:
        """The values of the @allowed([...]) decorator of `param`."""
        declared = self.declaration("param", param)
        if declared is None:
            raise Unreadable(f"{self.name} has no param {param}")
        found: Optional[List[Any]] = None
        for match in re.finditer(r"@allowed\(", self.text[:declared.start()]):
            values, end = parse_array(self.text, skip_blank(self.text, match.end()))
            between = self.text[skip_blank(self.text, end):declared.start()]
            # Only the closing parenthesis and other decorators between it and the param.
            if re.fullmatch(r"\)\s*(@\w+\((?:[^()']|'(?:[^'\\]|\\.)*')*\)\s*)*", between):
                found = values
        if found is None:
            raise Unreadable(f"{self.name}: param {param} has no @allowed list")
        values = [literal(value) for value in found]
        if not all(isinstance(value, str) for value in values):
            raise Unreadable(f"{self.name}: the @allowed list of {param} is not all text")
        return values

    def resources(self, kind: str) -> Iterator[Resource]:
        """The resources of type `kind` (as 'Microsoft.App/jobs') the file declares; only
        those are read."""
        pattern = (rf"^[ \t]*resource[ \t]+\w+[ \t]+'(?P<kind>{re.escape(kind)})@(?P<version>[^']+)'"
                   r"[ \t]*(?P<existing>existing[ \t]*)?=")
        for match in re.finditer(pattern, self.text, re.MULTILINE | re.IGNORECASE):
            if match.group("existing"):
                continue
            i = skip_blank(self.text, match.end())
            if self.text.startswith("if", i):
                i = skip_expression(self.text, skip_blank(self.text, i + 2), closer="{")
            if self.text.startswith("[", i):
                raise Unreadable(f"{self.name}: a resource loop ({match.group('kind')})")
            body, _ = parse_object(self.text, i)
            yield Resource(self, match.group("kind"), match.group("version"), body)

    def module_params(self, target: str) -> Optional[Dict[str, Any]]:
        """The params this file passes to the module at relative path `target`, or None
        when it calls no such module."""
        pattern = rf"^[ \t]*module[ \t]+\w+[ \t]+'{re.escape(target)}'[ \t]*="
        match = re.search(pattern, self.text, re.MULTILINE)
        if match is None:
            return None
        i = skip_blank(self.text, match.end())
        if self.text.startswith("if", i):
            i = skip_expression(self.text, skip_blank(self.text, i + 2), closer="{")
        if not self.text.startswith("{", i):
            raise Unreadable(f"{self.name}: cannot read its call of {target}")
        body, _ = parse_object(self.text, i)
        params = body.get("params")
        return params if isinstance(params, dict) else {}


class PostgresPlan:
    """The PostgreSQL Flexible Server infra/ deploys."""

    def __init__(self, version: str, sku_name: str, sku_tier: str, api_version: str) -> None:
        self.version = version
        self.sku_name = sku_name
        self.sku_tier = sku_tier
        self.api_version = api_version


class Cores:
    """The vCPU cores the container apps and jobs ask for: when provisioned (each app at
    its minimum of replicas) and at most (each app at its maximum, each job running)."""

    def __init__(self, at_start: float, at_most: float) -> None:
        self.at_start = at_start
        self.at_most = at_most


class Infra:
    """infra/ as azd deploys it, with the azd environment's values (`environ`)."""

    def __init__(self, folder: Path, environ: Mapping[str, str]) -> None:
        self.folder = folder
        self.environ = environ
        self._files: Dict[Path, BicepFile] = {}

    def file(self, relative: str) -> BicepFile:
        path = (self.folder / relative).resolve()
        if path not in self._files:
            if not path.is_file():
                raise Unreadable(f"infra/{relative} does not exist")
            self._files[path] = BicepFile(path, self.folder.resolve())
        return self._files[path]

    @property
    def main(self) -> BicepFile:
        return self.file("main.bicep")

    def bicep_files(self) -> List[BicepFile]:
        return [self.file(path.relative_to(self.folder).as_posix()) for path in sorted(self.folder.rglob("*.bicep"))]

    def parameters(self) -> Dict[str, Any]:
        """main.parameters.json's parameters (none when there is no such file)."""
        path = self.folder / "main.parameters.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise Unreadable(f"infra/main.parameters.json is not JSON: {error}") from error
        parameters = data.get("parameters") if isinstance(data, dict) else None
        return parameters if isinstance(parameters, dict) else {}

    def main_param(self, name: str) -> Any:
        """A param of main.bicep as azd sets it: from main.parameters.json (its value,
        with "${VAR}" / "${VAR=default}" from the azd environment), else its default.
        An empty value counts as none."""
        entry = self.parameters().get(name)
        if isinstance(entry, dict) and "value" in entry:
            value = entry["value"]
            if not isinstance(value, str):
                return value
            match = ENV_REFERENCE.fullmatch(value)
            if match is None:
                if "${" in value:
                    raise Unreadable(f"infra/main.parameters.json: cannot tell the value of {name} ({value})")
                if value:
                    return value
            else:
                set_value = self.environ.get(match.group("name"), "").strip()
                if set_value:
                    return set_value
                if match.group("default"):
                    return match.group("default")
        default = self.main.param_default(name)
        if default is None:
            raise Unreadable(f"infra/main.bicep: param {name} has no value and no default")
        return self.evaluate(default, self.main)

    def evaluate(self, expression: Any, file: BicepFile, call: Optional[Dict[str, Any]] = None) -> Any:
        """The value of an expression of `file`: a literal, or a name followed through the
        file's vars and params; a module's params through `call` (what main.bicep passes
        it, looked up when not given)."""
        value = literal(expression)
        if value is not None:
            return value
        if not (isinstance(expression, str) and IDENTIFIER.fullmatch(expression.strip())):
            raise Unreadable(f"infra/{file.name}: cannot tell the value of {expression!r}")
        name = expression.strip()
        var = file.var(name)
        if var is not None:
            return self.evaluate(var, file, call)
        if file is self.main:
            if file.declaration("param", name) is None:
                raise Unreadable(f"infra/main.bicep: {name} is neither a param nor a var")
            return self.main_param(name)
        if file.declaration("param", name) is None:
            raise Unreadable(f"infra/{file.name}: {name} is neither a param nor a var")
        if call is None:
            call = self.main.module_params(file.name) or {}
        if name in call:
            return self.evaluate(call[name], self.main)
        default = file.param_default(name)
        if default is None:
            raise Unreadable(f"infra/{file.name}: param {name} gets no value from main.bicep and has no default")
        return self.evaluate(default, file, call)

    def resources(self, kind: str) -> List[Resource]:
        return [r for f in self.bicep_files() for r in f.resources(kind)]

    def api_version(self, kind: str) -> str:
        """The one API version infra/ declares resources of `kind` with."""
        versions = sorted({r.api_version for r in self.resources(kind)})
        if len(versions) != 1:
            raise Unreadable(f"infra/ declares {kind} with {len(versions)} API versions ({', '.join(versions) or 'none'})")
        return versions[0]

    def allowed_locations(self) -> List[str]:
        return self.main.allowed("location")

    def postgres(self) -> PostgresPlan:
        servers = self.resources("Microsoft.DBforPostgreSQL/flexibleServers")
        if len(servers) != 1:
            raise Unreadable(f"infra/ declares {len(servers)} PostgreSQL flexible servers, not one")
        server = servers[0]
        values = []
        for path in (("sku", "name"), ("sku", "tier"), ("properties", "version")):
            expression = server.get(*path)
            if expression is None:
                raise Unreadable(f"infra/{server.file.name}: the server has no {'.'.join(path)}")
            values.append(str(self.evaluate(expression, server.file)))
        return PostgresPlan(version=values[2], sku_name=values[0], sku_tier=values[1], api_version=server.api_version)

    def cores(self) -> Cores:
        at_start = at_most = 0.0
        for app in self.resources("Microsoft.App/containerApps"):
            cpu = self.container_cpu(app)
            low = self.number(app, ("properties", "template", "scale", "minReplicas"), DEFAULT_MIN_REPLICAS)
            high = self.number(app, ("properties", "template", "scale", "maxReplicas"), DEFAULT_MAX_REPLICAS)
            at_start += cpu * low
            at_most += cpu * high
        for job in self.resources("Microsoft.App/jobs"):
            trigger = self.evaluate(job.get("properties", "configuration", "triggerType") or "'Manual'", job.file)
            config = f"{str(trigger).lower()}TriggerConfig"
            parallel = self.number(job, ("properties", "configuration", config, "parallelism"), 1)
            at_most += self.container_cpu(job) * parallel
        return Cores(at_start, at_most)

    def container_cpu(self, resource: Resource) -> float:
        containers = resource.get("properties", "template", "containers")
        if not isinstance(containers, list) or not containers:
            raise Unreadable(f"infra/{resource.file.name}: {resource.kind} without a readable containers list")
        total = 0.0
        for index in range(len(containers)):
            total += self.number(resource, ("properties", "template", "containers", index, "resources", "cpu"), None)
        return total

    def number(self, resource: Resource, path: Tuple[Any, ...], default: Optional[float]) -> float:
        expression = resource.get(*path)
        if expression is None:
            if default is None:
                raise Unreadable(f"infra/{resource.file.name}: {resource.kind} has no {'.'.join(map(str, path))}")
            return float(default)
        value = self.evaluate(expression, resource.file)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unreadable(f"infra/{resource.file.name}: {'.'.join(map(str, path))} is not a number: {value!r}")
        return float(value)
