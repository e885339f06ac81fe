"""azd `preprovision` hook (azure.yaml): checks, before anything is created, that the chosen
subscription and region can take this template.

  1. region: it is one that infra/main.bicep's `location` allows;
  2. PostgreSQL: Azure Database for PostgreSQL flexible server offers the version, tier and
     SKU infra/ deploys there, and not restricted for this subscription (the capabilities
     of the location: `restricted`, the OfferRestricted feature, each capability's status);
  3. Container Apps: managed environments are offered there (Microsoft.App's resource
     types and their locations);
  4. quota: room for what the template adds: one Container Apps environment, the cores its
     apps start with (Microsoft.App usages: ManagedEnvironmentCount,
     ManagedEnvironmentCores), and one server's vCores in the SKU's family (PostgreSQL
     usages). What a previous provision of this environment created is counted as there.

What infra/ deploys (version, SKU, tier, regions, cores, API versions) is read from its
Bicep files and main.parameters.json at run time (infra_template.py), with the values the
azd environment sets.

A refusal stops azd (exit code 1) before anything is created, saying what failed and
what to do: another region the template allows, or more quota. A check that cannot be
made (no region chosen yet: a first `azd provision` asks for it after this hook; no
access, 403; Azure unreachable; azd signed out; infra/ unreadable) is reported as a
warning and azd goes on (exit code 0): the provision itself will then say what is wrong.
PREFLIGHT_SKIP=true (`azd env set PREFLIGHT_SKIP true`) skips every check. Run it again
any time with `azd hooks run preprovision`.

Environment (the azd environment): AZURE_SUBSCRIPTION_ID, AZURE_LOCATION; optional:
AZURE_TENANT_ID (the tenant azd asks a token for), and the outputs of an earlier provision
(AZURE_RESOURCE_GROUP, AZURE_CONTAINER_APPS_ENVIRONMENT_NAME, POSTGRES_SERVER_NAME), by
which resources that exist already are found. RETRY_DELAY (2): the first back-off of a
request Azure throttled or failed (it doubles; three tries).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# The shared modules sit beside this script (sys.path[0]); importing them writes no
# __pycache__ into the project.
sys.dont_write_bytecode = True
from azure_api import APP_API_VERSION, ApiError, Azure, AzdToken, HookFailure, Output, run  # noqa: E402
from infra_template import Infra, PostgresPlan, Unreadable  # noqa: E402

INFRA = Path(__file__).resolve().parent.parent
QUOTA_HELP = "https://learn.microsoft.com/azure/quotas/quickstart-increase-quota-portal"
RESTRICTED_HELP = "https://learn.microsoft.com/azure/postgresql/troubleshoot/how-to-resolve-capacity-errors"
# Fewer tries than the other hooks: a check that cannot be made is skipped, not waited for.
ATTEMPTS = 3
# Pages of a list answer followed (nextLink) before the check gives up.
MAX_PAGES = 10
TRUE = ("1", "true", "yes", "on")


class Refusal:
    """A check that failed: what, and whether more quota (rather than another region) helps."""

    def __init__(self, text: str, quota: bool = False, restricted: bool = False) -> None:
        self.text = text
        self.quota = quota
        self.restricted = restricted


class CannotCheck(Exception):
    """A check that cannot be made; the message says why."""


def normalised(location: str) -> str:
    """A region's name as ARM's programmatic names are: "East US" -> "eastus"."""
    return re.sub(r"\s+", "", location).lower()


def main() -> int:
    return run("preflight", preflight)


class Preflight:
    """The checks, their outcomes, and the way to Azure."""

    def __init__(self, out: Output, subscription: str, location: str) -> None:
        self.out = out
        self.subscription = subscription
        self.location = location
        self.infra = Infra(INFRA, os.environ)
        self.azure = Azure(AzdToken(os.environ.get("AZURE_TENANT_ID", "").strip()), attempts=ATTEMPTS)
        self.refusals: List[Refusal] = []
        self.unchecked = 0
        self.cautions = 0
        self.unreachable = ""
        self.postgres: Optional[PostgresPlan] = None
        self.server_vcores: Optional[int] = None

    # Outcomes.

    def ok(self, topic: str, text: str) -> None:
        self.out.say(f"{topic}: OK: {text}")

    def refuse(self, topic: str, refusal: Refusal) -> None:
        self.out.say(f"{topic}: REFUSED: {refusal.text}")
        self.refusals.append(refusal)

    def warn(self, topic: str, text: str) -> None:
        self.out.say(f"{topic}: WARNING: not checked: {text}")
        self.unchecked += 1

    def check(self, topic: str, body: Callable[[], None]) -> None:
        """Runs one check; what stops it from being made becomes a warning."""
        try:
            body()
        except (CannotCheck, Unreadable) as reason:
            self.warn(topic, str(reason))
        except ApiError as failure:
            if failure.status == 0:
                # Connection-level: the next checks would only wait as long to fail.
                self.unreachable = failure.message
            self.warn(topic, failure.message)
        except HookFailure as failure:
            self.warn(topic, failure.message)

    def arm(self, path: str, api_version: str, allow_not_found: bool = False) -> Any:
        if self.unreachable:
            raise CannotCheck(f"not tried after an earlier failure ({self.unreachable})")
        try:
            self.azure.token.get()
        except HookFailure as failure:
            # azd signed out or missing: no later check would fare better.
            self.unreachable = failure.message
            raise CannotCheck(failure.message) from failure
        return self.azure.arm("GET", path, api_version=api_version, allow_not_found=allow_not_found)

    def arm_list(self, path: str, api_version: str) -> List[Any]:
        """The items of a list answer, every page of it (nextLink, on ARM only: the token
        goes nowhere else)."""
        answer = self.arm(path, api_version) or {}
        items = list(answer.get("value") or [])
        for _ in range(MAX_PAGES - 1):
            link = str(answer.get("nextLink") or "")
            if not link:
                return items
            if not link.startswith(f"{self.azure.base_url}/"):
                raise CannotCheck(f"the next page of {path} is not on Azure Resource Manager: {link}")
            page = self.azure.send("GET", link, self.azure.token.get, renew=self.azure.token.renew)
            answer = (page.json() if page is not None else None) or {}
            items += answer.get("value") or []
        raise CannotCheck(f"{path} has more than {MAX_PAGES} pages")

    @property
    def subscription_path(self) -> str:
        return f"/subscriptions/{self.subscription}"

    # 1. The region.

    def check_region(self) -> None:
        allowed = [normalised(region) for region in self.infra.allowed_locations()]
        if self.location not in allowed:
            self.refuse("region", Refusal(f"{self.location} is not a region infra/main.bicep allows for `location`"))
        else:
            self.ok("region", f"{self.location} is one of the {len(allowed)} regions the template allows")

    # 2. PostgreSQL: version, tier and SKU offered, not restricted.

    def check_postgres(self) -> None:
        plan = self.postgres = self.infra.postgres()
        answer = self.arm_list(
            f"{self.subscription_path}/providers/Microsoft.DBforPostgreSQL/locations/{self.location}/capabilities",
            plan.api_version,
        )
        capabilities = [c for c in answer if isinstance(c, dict)]
        if not capabilities:
            raise CannotCheck(f"the capabilities of PostgreSQL in {self.location} came back empty")
        problems = postgres_problems(capabilities, plan, self.location)
        self.server_vcores = sku_vcores(capabilities, plan)
        what = f"PostgreSQL {plan.version}, {plan.sku_tier} {plan.sku_name}"
        for problem in problems:
            self.refuse("PostgreSQL", problem)
        if not problems:
            self.ok("PostgreSQL", f"{what} is offered in {self.location}, not restricted for this subscription")

    # 3. Container Apps environments offered.

    def check_container_apps(self) -> None:
        version = self.infra.api_version("Microsoft.Resources/resourceGroups")
        provider = self.arm(f"{self.subscription_path}/providers/Microsoft.App", version) or {}
        for resource_type in provider.get("resourceTypes") or []:
            if isinstance(resource_type, dict) and str(resource_type.get("resourceType", "")).lower() == "managedenvironments":
                locations = {normalised(str(name)) for name in resource_type.get("locations") or []}
                if self.location in locations:
                    self.ok("Container Apps", f"managed environments are offered in {self.location}")
                else:
                    self.refuse("Container Apps", Refusal(
                        f"Container Apps environments are not offered in {self.location} to this subscription"))
                return
        raise CannotCheck("Microsoft.App lists no managedEnvironments resource type")

    # 4. Quota.

    def exists(self, name_variable: str, provider_path: str, api_version: str) -> Optional[bool]:
        """Whether the resource an earlier provision named in `name_variable` exists:
        False when there was none, None when that cannot be told."""
        group = os.environ.get("AZURE_RESOURCE_GROUP", "").strip()
        name = os.environ.get(name_variable, "").strip()
        if not group or not name:
            return False
        path = f"{self.subscription_path}/resourceGroups/{group}/providers/{provider_path}/{name}"
        try:
            return self.arm(path, api_version, allow_not_found=True) is not None
        except (CannotCheck, HookFailure):
            return None

    def check_app_quota(self) -> None:
        cores = self.infra.cores()
        usages = usage_table(self.arm_list(
            f"{self.subscription_path}/providers/Microsoft.App/locations/{self.location}/usages", APP_API_VERSION))
        present = self.exists("AZURE_CONTAINER_APPS_ENVIRONMENT_NAME", "Microsoft.App/managedEnvironments", APP_API_VERSION)
        self.quota("Container Apps environments", usages, "ManagedEnvironmentCount", 0 if present else 1, present)
        self.quota("Container Apps cores", usages, "ManagedEnvironmentCores", 0 if present else cores.at_start, present,
                   at_most=None if present else cores.at_most)

    def check_postgres_quota(self) -> None:
        plan = self.postgres or self.infra.postgres()
        family = sku_family(plan.sku_name)
        vcores = self.server_vcores or vcores_in_name(plan.sku_name)
        if family is None or vcores is None:
            raise CannotCheck(f"cannot tell the quota family or the vCores of {plan.sku_name}")
        usages = usage_table(self.arm_list(
            f"{self.subscription_path}/providers/Microsoft.DBforPostgreSQL/locations/{self.location}"
            "/resourceType/flexibleServers/usages",
            plan.api_version,
        ))
        present = self.exists("POSTGRES_SERVER_NAME", "Microsoft.DBforPostgreSQL/flexibleServers", plan.api_version)
        self.quota(f"PostgreSQL {family} vCores", usages, family, 0 if present else vcores, present)

    def quota(self, what: str, usages: Dict[str, Tuple[float, float]], name: str, needed: float,
              present: Optional[bool], at_most: Optional[float] = None) -> None:
        found = usages.get(name.lower())
        if found is None:
            raise CannotCheck(f"{what}: the usages list no {name}")
        used, limit = found
        room = limit - used
        state = f"{figure(used)} of {figure(limit)} used"
        already = " (what this environment provisioned before is counted as there)" if present else ""
        if needed > room:
            text = f"{what}: {state}, {figure(needed)} needed{already}"
            if present is None:
                self.warn("quota", f"{text}, but whether a previous provision made them already cannot be told")
            else:
                self.refuse("quota", Refusal(text, quota=True))
            return
        self.ok("quota", f"{what}: {state}, {figure(needed)} needed{already}")
        if at_most is not None and at_most > room:
            self.out.say(f"quota: WARNING: {what}: the apps at their most replicas need {figure(at_most)}, "
                         f"more than the {figure(room)} left: they will not all scale out (quota: {QUOTA_HELP})")
            self.cautions += 1

    # The verdict.

    def run(self) -> None:
        self.out.say(f"subscription {self.subscription}, region {self.location}")
        self.check("region", self.check_region)
        if self.refusals:
            # Azure would refuse the deployment whatever else holds.
            self.verdict()
            return
        self.check("PostgreSQL", self.check_postgres)
        self.check("Container Apps", self.check_container_apps)
        self.check("quota", self.check_app_quota)
        self.check("quota", self.check_postgres_quota)
        self.verdict()

    def verdict(self) -> None:
        if self.refusals:
            raise HookFailure(
                f"{self.location} cannot take this template, nothing was created:\n"
                + "\n".join(f"  - {refusal.text}" for refusal in self.refusals),
                self.what_to_do(),
            )
        if self.unchecked:
            self.out.say(f"done: nothing refused, but {self.unchecked} check(s) could not be made (above): "
                         "the provision itself will tell if something is wrong")
        else:
            caution = " (but see the warning above)" if self.cautions else ""
            self.out.say(f"OK: {self.location} can take this template{caution}")

    def what_to_do(self) -> str:
        lines = ["What to do:"]
        try:
            others = [region for region in self.infra.allowed_locations() if normalised(region) != self.location]
        except Unreadable:
            others = []
        if others:
            lines.append("  - pick another region the template allows, then run azd up (or azd provision) again:")
            lines.append("      azd env set AZURE_LOCATION <region>")
            lines.append(f"    ({', '.join(others)})")
        if any(refusal.quota for refusal in self.refusals):
            lines.append(f"  - or ask for more quota in this region: {QUOTA_HELP}")
        if any(refusal.restricted for refusal in self.refusals):
            lines.append(f"  - or ask for access to PostgreSQL in this region (a support request): {RESTRICTED_HELP}")
        lines.append("  - to provision regardless (Azure will refuse what cannot be done): azd env set PREFLIGHT_SKIP true")
        return "\n".join(lines)


def postgres_problems(capabilities: List[Dict[str, Any]], plan: PostgresPlan, location: str) -> List[Refusal]:
    """What in the capabilities of a location stands in the way of `plan`."""
    problems: List[Refusal] = []
    restricted = [c for c in capabilities if str(c.get("restricted", "")).lower() == "enabled"
                  or any(str(f.get("name", "")).lower() == "offerrestricted" and str(f.get("status", "")).lower() == "enabled"
                         for f in c.get("supportedFeatures") or [] if isinstance(f, dict))]
    if restricted:
        reason = next((str(c.get("reason")) for c in restricted if c.get("reason")), "")
        problems.append(Refusal(
            f"PostgreSQL flexible server is restricted in {location} for this subscription's offer"
            f"{f' ({reason})' if reason else ''}: creating it would fail with LocationIsOfferRestricted",
            restricted=True,
        ))
        return problems
    versions = [v for c in capabilities for v in c.get("supportedServerVersions") or [] if isinstance(v, dict)]
    version = next((v for v in versions if str(v.get("name")) == plan.version), None)
    if version is None:
        offered = sorted({str(v.get("name")) for v in versions})
        problems.append(Refusal(f"PostgreSQL {plan.version} is not offered in {location} (offered: {', '.join(offered) or 'none'})"))
    elif unavailable(version):
        problems.append(Refusal(f"PostgreSQL {plan.version} is not available in {location}{because(version)}"))
    editions = [e for c in capabilities for e in c.get("supportedServerEditions") or [] if isinstance(e, dict)]
    edition = next((e for e in editions if str(e.get("name", "")).lower() == plan.sku_tier.lower()), None)
    if edition is None:
        problems.append(Refusal(f"the PostgreSQL tier {plan.sku_tier} is not offered in {location}"))
        return problems
    if unavailable(edition):
        problems.append(Refusal(f"the PostgreSQL tier {plan.sku_tier} is not available in {location}{because(edition)}"))
    skus = [s for s in edition.get("supportedServerSkus") or [] if isinstance(s, dict)]
    sku = next((s for s in skus if str(s.get("name", "")).lower() == plan.sku_name.lower()), None)
    if sku is None:
        problems.append(Refusal(f"the PostgreSQL SKU {plan.sku_name} ({plan.sku_tier}) is not offered in {location}"))
    elif unavailable(sku):
        problems.append(Refusal(f"the PostgreSQL SKU {plan.sku_name} is not available in {location}{because(sku)}"))
    return problems


def unavailable(capability: Dict[str, Any]) -> bool:
    """A capability whose status says it cannot be chosen (Visible, Available and Default can)."""
    return str(capability.get("status", "")).lower() == "disabled"


def because(capability: Dict[str, Any]) -> str:
    return f" ({capability['reason']})" if capability.get("reason") else ""


def sku_vcores(capabilities: List[Dict[str, Any]], plan: PostgresPlan) -> Optional[int]:
    for capability in capabilities:
        for edition in capability.get("supportedServerEditions") or []:
            for sku in edition.get("supportedServerSkus") or []:
                if str(sku.get("name", "")).lower() == plan.sku_name.lower() and isinstance(sku.get("vCores"), int):
                    return sku["vCores"]
    return None


SKU_NAME = re.compile(r"Standard_(?P<series>[A-Z]+)(?P<cores>\d+)(?P<suffix>[a-z]*)(?:_(?P<version>v\d+))?", re.IGNORECASE)


def vcores_in_name(sku: str) -> Optional[int]:
    """The vCores an Azure compute name says (Standard_D4ds_v5: 4)."""
    match = SKU_NAME.fullmatch(sku)
    return int(match.group("cores")) if match else None


def sku_family(sku: str) -> Optional[str]:
    """The quota family of a compute name, as PostgreSQL's usages name it: Standard_B1ms
    -> standardBSFamily (every B-series SKU), Standard_D2ds_v4 -> standardDDSv4Family."""
    match = SKU_NAME.fullmatch(sku)
    if match is None:
        return None
    series = match.group("series").upper()
    if series == "B" and not match.group("version"):
        return "standardBSFamily"
    return f"standard{series}{match.group('suffix').upper()}{match.group('version') or ''}Family"


def usage_table(usages: List[Any]) -> Dict[str, Tuple[float, float]]:
    """{usage name, lower case: (current value, limit)} of the usages of a usages answer."""
    table: Dict[str, Tuple[float, float]] = {}
    for usage in usages:
        if not isinstance(usage, dict):
            continue
        name = (usage.get("name") or {}).get("value") if isinstance(usage.get("name"), dict) else usage.get("name")
        current, limit = usage.get("currentValue"), usage.get("limit")
        if isinstance(name, str) and isinstance(current, (int, float)) and isinstance(limit, (int, float)):
            table[name.lower()] = (float(current), float(limit))
    return table


def figure(value: float) -> str:
    return f"{value:g}"


def preflight(out: Output) -> None:
    if os.environ.get("PREFLIGHT_SKIP", "").strip().lower() in TRUE:
        out.say("skipped (PREFLIGHT_SKIP)")
        return
    subscription = os.environ.get("AZURE_SUBSCRIPTION_ID", "").strip()
    location = normalised(os.environ.get("AZURE_LOCATION", ""))
    if not subscription or not location:
        missing = " and ".join(name for name, value in (("the subscription", subscription), ("the region", location)) if not value)
        out.say(f"WARNING: not checked: {missing} not chosen yet (azd asks for it next); "
                "'azd hooks run preprovision' checks them once chosen")
        return
    Preflight(out, subscription, location).run()


if __name__ == "__main__":
    raise SystemExit(main())
