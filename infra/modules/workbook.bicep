// The operations dashboard: an Azure Workbook over the Log Analytics workspace, with batch's
// runs (orders read, inserted, already present, rejected; duration; chunk retries) from its
// log lines, order-processor's requests and errors from its server spans and log lines,
// and the slowest traces (Application Insights' tables in the same workspace). Its queries
// follow the convention of alerts.bicep (tests/infra/log_queries.py reads both);
// {TimeRange:grain} is the workbook's own parameter. main.bicep outputs its portal URL as
// AZURE_WORKBOOK_URL. What it shows: docs/operations.md#the-dashboard.
param location string
param tags object
@description('Name of the azd environment, in the workbook\'s title.')
param environmentName string
param workspaceName string
param batchAppName string
param orderProcessorAppName string

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' existing = {
  name: workspaceName
}

var logs = 'microsoft.operationalinsights/workspaces'

var content = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'title'
      content: {
        json: '## dapr-rust-aca\nbatch\'s runs, order-processor\'s requests and the slowest traces. The alerts, and what to do when one fires: docs/operations.md in the repository.'
      }
    }
    {
      type: 9
      name: 'parameters'
      content: {
        version: 'KqlParameterItem/1.0'
        style: 'pills'
        queryType: 0
        resourceType: logs
        parameters: [
          {
            id: 'b7d4c3a2-5e61-4f0a-9c8e-2d1f6a7b8c90'
            version: 'KqlParameterItem/1.0'
            name: 'TimeRange'
            label: 'Time range'
            type: 4
            isRequired: true
            value: {
              durationMs: 86400000
            }
            typeSettings: {
              selectableValues: [
                { durationMs: 3600000 }
                { durationMs: 14400000 }
                { durationMs: 86400000 }
                { durationMs: 604800000 }
              ]
              allowCustom: true
            }
          }
        ]
      }
    }
    {
      type: 3
      name: 'runs'
      content: {
        version: 'KqlItem/1.0'
        title: 'batch: the last runs'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'run finished'
| project TimeGenerated, outcome = tostring(e.outcome), read = tolong(e.read), inserted = tolong(e.inserted), already_present = tolong(e.already_present), rejected = tolong(e.rejected), unsendable = tolong(e.unsendable), duration_ms = tolong(e.duration_ms), trace_id = tostring(e.trace_id)
| top 50 by TimeGenerated desc
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'table'
      }
    }
    {
      type: 3
      name: 'orders'
      content: {
        version: 'KqlItem/1.0'
        title: 'batch: orders read, inserted, already present and rejected by its runs'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'run finished'
| summarize read = sum(tolong(e.read)), inserted = sum(tolong(e.inserted)), already_present = sum(tolong(e.already_present)), rejected = sum(tolong(e.rejected)) by bin(TimeGenerated, {TimeRange:grain})
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'duration'
      content: {
        version: 'KqlItem/1.0'
        title: 'batch: run duration (ms)'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'run finished'
| summarize p50 = percentile(tolong(e.duration_ms), 50), p95 = percentile(tolong(e.duration_ms), 95), longest = max(tolong(e.duration_ms)) by bin(TimeGenerated, {TimeRange:grain})
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'retries'
      content: {
        version: 'KqlItem/1.0'
        title: 'batch: chunk retries, by reason'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{batch}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'submitting a chunk failed; retrying'
| summarize retries = count() by bin(TimeGenerated, {TimeRange:grain}), reason = tostring(e.reason)
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'requests'
      content: {
        version: 'KqlItem/1.0'
        title: 'order-processor: POST /orders requests and their errors (server spans)'
        query: '''
AppRequests
| where AppRoleName == 'order-processor' and Name startswith 'POST /orders'
| summarize requests = count(), client_errors = countif(toint(ResultCode) between (400 .. 499)), server_errors = countif(toint(ResultCode) >= 500) by bin(TimeGenerated, {TimeRange:grain})
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'stored'
      content: {
        version: 'KqlItem/1.0'
        title: 'order-processor: orders received and inserted (its log)'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{order-processor}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'orders stored'
| summarize requests = count(), received = sum(tolong(e.received)), inserted = sum(tolong(e.inserted)), unchanged = sum(tolong(e.unchanged)), conflicts = sum(tolong(e.conflicts)) by bin(TimeGenerated, {TimeRange:grain})
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'failures'
      content: {
        version: 'KqlItem/1.0'
        title: 'order-processor: 5xx answers (its log, what the alert counts)'
        query: '''
ContainerAppConsoleLogs_CL
| where ContainerAppName_s == '{order-processor}'
| extend e = parse_json(Log_s)
| where tostring(e.message) == 'request failed'
| summarize failures = count() by bin(TimeGenerated, {TimeRange:grain}), cause = tostring(e.cause)
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'timechart'
      }
      customWidth: '50'
    }
    {
      type: 3
      name: 'slowest'
      content: {
        version: 'KqlItem/1.0'
        title: 'The slowest traces (operation id: the trace_id of the log lines)'
        query: '''
union AppRequests, AppDependencies
| where isnotempty(OperationId)
| summarize arg_max(DurationMs, Name, AppRoleName), spans = count(), started = min(TimeGenerated) by OperationId
| top 20 by DurationMs desc
| project started, OperationId, slowest_span = Name, role = AppRoleName, DurationMs, spans
'''
        size: 0
        timeContextFromParameter: 'TimeRange'
        queryType: 0
        resourceType: logs
        visualization: 'table'
      }
    }
  ]
  fallbackResourceIds: [toLower(workspace.id)]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'dapr-rust-aca-operations')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'dapr-rust-aca operations (${environmentName})'
    category: 'workbook'
    sourceId: toLower(workspace.id)
    version: 'Notebook/1.0'
    serializedData: replace(replace(string(content), '{batch}', batchAppName), '{order-processor}', orderProcessorAppName)
  }
}

output id string = workbook.id
output url string = '${environment().portal}/#@${tenant().tenantId}/resource${workbook.id}/workbook'
