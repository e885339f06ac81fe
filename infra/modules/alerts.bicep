// Alerts, on by default: log alerts on the services' own JSON log lines in Log Analytics
// and metric alerts on PostgreSQL, all wired to one action group. The action group e-mails
// `alertEmail` when it is set; without it the alerts still fire and show in the portal
// (Monitor > Alerts). What each alert means and what to do: docs/operations.md.
//
// Container Apps sends console logs to ContainerAppConsoleLogs_CL, the raw line in Log_s
// (environment.bicep: `log-analytics` destination, dynamicJsonColumns off). Every query
// follows one convention, which tests/infra/log_queries.py reads: the app is selected with
// `ContainerAppName_s == '{batch}'` or `'{order-processor}'` (replaced below with the
// app's name), the line is parsed once with `| extend e = parse_json(Log_s)`, and its
// fields are then read only as `e.<field>`; a message is matched with
// `tostring(e.message) == '<message>'`. Each query returns rows exactly when the alert
// should fire (criteria: Count > 0), so its threshold is in the query.
param location string
param tags object
param actionGroupName string
@description('E-mail address for alert notifications; empty: none (alerts still fire and show in the portal).')
param alertEmail string = ''
param workspaceName string
param postgresServerName string
param batchAppName string
param orderProcessorAppName string
@minValue(1)
@description('How often the Dapr cron binding triggers batch, in seconds (dapr-components.bicep).')
param cronPeriodSeconds int

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' existing = {
  name: workspaceName
}

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' existing = {
  name: postgresServerName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'orders'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// (a) No completed run for six cron periods, at least 15 minutes (at the default 10 s, 15
// minutes: 90 ticks). `unchanged` counts: the file was stored completely before.
var sixPeriodsSeconds = 6 * cronPeriodSeconds
var staleMinutes = max(15, (sixPeriodsSeconds + 59) / 60)
var noCompletedRunQuery = replace('''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'run finished'
| summarize runs = count(), completed = countif(tostring(e.outcome) in ('completed', 'unchanged'))
| where completed == 0
''', '{batch}', batchAppName)

// (b) A run that left orders unstored because they are invalid (rejected) or cannot be sent
// as things are configured (unsendable).
var ordersNotStoredQuery = replace('''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'run finished'
| where tolong(e.rejected) > 0 or tolong(e.unsendable) > 0
| project TimeGenerated, outcome = tostring(e.outcome), rejected = tolong(e.rejected), unsendable = tolong(e.unsendable), trace_id = tostring(e.trace_id)
''', '{batch}', batchAppName)

// (c) order-processor's sidecar has not loaded the binding in at least 10 of the last 15
// minutes: readiness asks every few seconds and logs this each time. Shorter gaps are the
// first deploy's sidecar restart, which order-processor asks for itself.
var bindingUnavailableQuery = replace('''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{order-processor}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'not ready: the sidecar has not loaded the binding'
| summarize minutes = dcount(bin(TimeGenerated, 1m)), binding = take_any(tostring(e.binding))
| where minutes >= 10
''', '{order-processor}', orderProcessorAppName)

// (d) Repeated 5xx answers: order-processor logs each one at ERROR as `request failed`, with
// its status and cause (unavailable, refused by the database, the binding forbidden). batch
// retries a failed call, so a single failure is not worth an alert; five in 15 minutes are.
var serverErrorsQuery = replace('''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{order-processor}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'request failed' and tostring(e.level) == 'ERROR'
| summarize failures = count(), last_error = take_any(strcat(tostring(e.cause), ': ', tostring(e.error)))
| where failures >= 5
''', '{order-processor}', orderProcessorAppName)

// Evaluation every 5 or 15 minutes: log alerts are billed per rule by frequency
// (docs/azure.md, what it costs). skipQueryValidation: the table appears in the workspace
// only with the first console line, after this deployment.
var logAlerts = [
  {
    name: 'batch-no-completed-run'
    displayName: 'batch: no completed run in ${staleMinutes} minutes'
    description: 'No batch run finished completed or unchanged in the window: nothing is being stored. docs/operations.md#batch-no-completed-run'
    severity: 1
    frequency: 'PT5M'
    window: 'PT${staleMinutes}M'
    query: noCompletedRunQuery
  }
  {
    name: 'batch-orders-not-stored'
    displayName: 'batch: a run left rejected or unsendable orders'
    description: 'A batch run found invalid orders (rejected) or orders it cannot send as configured (unsendable). docs/operations.md#batch-orders-not-stored'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    query: ordersNotStoredQuery
  }
  {
    name: 'order-processor-binding-unavailable'
    displayName: 'order-processor: the sidecar has no PostgreSQL binding'
    description: 'For 10 of the last 15 minutes order-processor was not ready because its sidecar has not loaded the sqldb binding: no order can be stored. docs/operations.md#order-processor-binding-unavailable'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    query: bindingUnavailableQuery
  }
  {
    name: 'order-processor-server-errors'
    displayName: 'order-processor: repeated 5xx answers'
    description: 'order-processor answered 5 or more requests with a server error in 15 minutes. docs/operations.md#order-processor-server-errors'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: serverErrorsQuery
  }
]

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in logAlerts: {
  name: alert.name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [workspace.id]
    evaluationFrequency: alert.frequency
    windowSize: alert.window
    skipQueryValidation: true
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [actionGroup.id]
    }
  }
}]

// Burstable B1ms (postgres.bicep) allows 50 connections, 35 of them for users (Azure
// keeps 15: "Limits in Azure Database for PostgreSQL flexible server"). The apps use at most
// 3 replicas x (5 in order-processor's pool + the binding's few).
var maxUserConnections = 35
var metricAlerts = [
  {
    name: 'postgres-storage'
    description: 'PostgreSQL storage above 80 % (storage_percent, 15-minute average). docs/operations.md#postgres-storage'
    severity: 2
    metric: 'storage_percent'
    threshold: 80
  }
  {
    name: 'postgres-cpu'
    description: 'PostgreSQL CPU above 80 % for 15 minutes (cpu_percent): a burstable server runs out of credits. docs/operations.md#postgres-cpu'
    severity: 3
    metric: 'cpu_percent'
    threshold: 80
  }
  {
    name: 'postgres-connections'
    description: 'PostgreSQL active connections above 80 % of the ${maxUserConnections} user connections of B1ms (15-minute average). docs/operations.md#postgres-connections'
    severity: 2
    metric: 'active_connections'
    threshold: (maxUserConnections * 80) / 100
  }
]

resource metricAlertRules 'Microsoft.Insights/metricAlerts@2018-03-01' = [for alert in metricAlerts: {
  name: alert.name
  location: 'global'
  tags: tags
  properties: {
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [postgres.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: alert.metric
          metricNamespace: 'Microsoft.DBforPostgreSQL/flexibleServers'
          metricName: alert.metric
          operator: 'GreaterThan'
          threshold: alert.threshold
          timeAggregation: 'Average'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

output actionGroupName string = actionGroup.name
output logAlertNames array = [for alert in logAlerts: alert.name]
output staleMinutes int = staleMinutes
