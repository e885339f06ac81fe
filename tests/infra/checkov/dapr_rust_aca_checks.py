"""Checkov policies of dapr-rust-aca for what matters in its Bicep (infra/).

Checkov's built-in Bicep checks do not cover PostgreSQL Flexible Server, Dapr components
or Container Apps, so these say what this template promises: PostgreSQL reachable only
privately, with Microsoft Entra ID only and TLS; a registry without its admin user; every
Dapr component scoped; batch at exactly one replica; no public ingress; every alert rule
enabled and sent to an action group, which is enabled. Values are read as pycep parses
them: a literal is its value, a reference is the referenced name (so it never passes as
'Disabled'), and a resource declared in a `for` loop is its body (`config`).
"""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


def body(conf):
    """The resource body: of a `[for ...]` resource, the body of its loop."""
    return conf["config"] if "loop_type" in conf and isinstance(conf.get("config"), dict) else conf


def lookup(conf, path):
    """The value at a dotted path of a resource body, or None."""
    value = body(conf)
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


class PostgresEntraOnly(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="PostgreSQL Flexible Server takes Microsoft Entra ID only (password authentication off)",
            id="CKV_DRA_1",
            categories=[CheckCategories.IAM],
            supported_resources=["Microsoft.DBforPostgreSQL/flexibleServers"],
        )

    def scan_resource_conf(self, conf):
        entra = lookup(conf, "properties.authConfig.activeDirectoryAuth")
        password = lookup(conf, "properties.authConfig.passwordAuth")
        login = lookup(conf, "properties.administratorLoginPassword")
        if entra == "Enabled" and password == "Disabled" and login is None:
            return CheckResult.PASSED
        return CheckResult.FAILED


class PostgresPrivateOnly(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="PostgreSQL Flexible Server has private access only (delegated subnet, public access off)",
            id="CKV_DRA_2",
            categories=[CheckCategories.NETWORKING],
            supported_resources=["Microsoft.DBforPostgreSQL/flexibleServers"],
        )

    def scan_resource_conf(self, conf):
        network = lookup(conf, "properties.network") or {}
        if network.get("publicNetworkAccess") == "Disabled" and network.get("delegatedSubnetResourceId"):
            return CheckResult.PASSED
        return CheckResult.FAILED


class PostgresNoFirewallRules(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="PostgreSQL has no firewall rules: it is reached through the VNet only",
            id="CKV_DRA_3",
            categories=[CheckCategories.NETWORKING],
            supported_resources=["Microsoft.DBforPostgreSQL/flexibleServers/firewallRules"],
        )

    def scan_resource_conf(self, conf):
        return CheckResult.FAILED


class PostgresTlsNotDisabled(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="PostgreSQL keeps TLS required (require_secure_transport on, TLS 1.2 or newer)",
            id="CKV_DRA_4",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["Microsoft.DBforPostgreSQL/flexibleServers/configurations"],
        )

    def scan_resource_conf(self, conf):
        name = str(conf.get("name", "")).lower()
        value = str(lookup(conf, "properties.value") or "").lower()
        if name == "require_secure_transport" and value != "on":
            return CheckResult.FAILED
        if name == "ssl_min_protocol_version" and value not in ("tlsv1.2", "tlsv1.3"):
            return CheckResult.FAILED
        return CheckResult.PASSED


class RegistryWithoutAdminUser(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Container registry has its admin user and anonymous pull off",
            id="CKV_DRA_5",
            categories=[CheckCategories.IAM],
            supported_resources=["Microsoft.ContainerRegistry/registries"],
        )

    def scan_resource_conf(self, conf):
        admin = lookup(conf, "properties.adminUserEnabled")
        anonymous = lookup(conf, "properties.anonymousPullEnabled")
        if admin is False and anonymous in (False, None):
            return CheckResult.PASSED
        return CheckResult.FAILED


class DaprComponentScoped(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Every Dapr component is scoped to the apps that use it",
            id="CKV_DRA_6",
            categories=[CheckCategories.IAM],
            supported_resources=["Microsoft.App/managedEnvironments/daprComponents"],
        )

    def scan_resource_conf(self, conf):
        scopes = lookup(conf, "properties.scopes")
        if isinstance(scopes, list) and scopes:
            return CheckResult.PASSED
        return CheckResult.FAILED


class BatchSingleReplica(BaseResourceCheck):
    """Cron fires on every replica and never at zero. The batch app is the container app
    whose Dapr app id is 'batch' (infra/app/batch.bicep writes it as a literal; the
    contract test checks that)."""

    def __init__(self):
        super().__init__(
            name="The batch container app runs exactly one replica",
            id="CKV_DRA_7",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["Microsoft.App/containerApps"],
        )

    def scan_resource_conf(self, conf):
        if lookup(conf, "properties.configuration.dapr.appId") != "batch":
            return CheckResult.PASSED
        scale = lookup(conf, "properties.template.scale") or {}
        if scale.get("minReplicas") == 1 and scale.get("maxReplicas") == 1:
            return CheckResult.PASSED
        return CheckResult.FAILED


class ContainerAppNoExternalIngress(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Container apps have no external ingress: their way in is the Dapr sidecar",
            id="CKV_DRA_8",
            categories=[CheckCategories.NETWORKING],
            supported_resources=["Microsoft.App/containerApps"],
        )

    def scan_resource_conf(self, conf):
        ingress = lookup(conf, "properties.configuration.ingress")
        if ingress is None or (isinstance(ingress, dict) and ingress.get("external") is False):
            return CheckResult.PASSED
        return CheckResult.FAILED


def is_resource_id(value):
    """Whether a pycep value is `<symbol>.id`: the id of a resource this template declares
    (a literal string, a parameter or an empty list is not)."""
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    operands = operator.get("operands", {})
    return (operator.get("type") == "property_accessor" and operands.get("operand_2") == "id"
            and isinstance(operands.get("operand_1"), str))


class AlertEnabledAndNotified(BaseResourceCheck):
    """An alert rule that is off, or that notifies no action group, says nothing: every log
    and metric alert is enabled (the literal true) and names at least one action group
    declared in the template, and nothing else."""

    def __init__(self):
        super().__init__(
            name="Every alert rule is enabled and sends to an action group of the template",
            id="CKV_DRA_9",
            categories=[CheckCategories.LOGGING],
            supported_resources=["Microsoft.Insights/scheduledQueryRules", "Microsoft.Insights/metricAlerts"],
        )

    def scan_resource_conf(self, conf):
        if lookup(conf, "properties.enabled") is not True:
            return CheckResult.FAILED
        actions = lookup(conf, "properties.actions")
        if isinstance(actions, dict):  # scheduledQueryRules: { actionGroups: [ids] }
            groups = actions.get("actionGroups")
        elif isinstance(actions, list):  # metricAlerts: [{ actionGroupId: id }]
            groups = [a.get("actionGroupId") if isinstance(a, dict) else None for a in actions]
        else:
            groups = None
        if isinstance(groups, list) and groups and all(is_resource_id(g) for g in groups):
            return CheckResult.PASSED
        return CheckResult.FAILED


class ActionGroupEnabled(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Action groups are enabled (a disabled one notifies no one)",
            id="CKV_DRA_10",
            categories=[CheckCategories.LOGGING],
            supported_resources=["Microsoft.Insights/actionGroups"],
        )

    def scan_resource_conf(self, conf):
        if lookup(conf, "properties.enabled") is True:
            return CheckResult.PASSED
        return CheckResult.FAILED


postgres_entra_only = PostgresEntraOnly()
postgres_private_only = PostgresPrivateOnly()
postgres_no_firewall_rules = PostgresNoFirewallRules()
postgres_tls = PostgresTlsNotDisabled()
registry_without_admin = RegistryWithoutAdminUser()
dapr_component_scoped = DaprComponentScoped()
batch_single_replica = BatchSingleReplica()
container_app_no_external_ingress = ContainerAppNoExternalIngress()
alert_enabled_and_notified = AlertEnabledAndNotified()
action_group_enabled = ActionGroupEnabled()
