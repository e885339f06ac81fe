// The Container Apps environment: VNet-integrated and internal (its endpoint is a private
// IP in the VNet, so no app can be reached from the internet), workload profiles with
// Consumption, console logs to Log Analytics, and the managed OpenTelemetry agent, which
// takes the apps' traces over OTLP (it sets OTEL_EXPORTER_OTLP_ENDPOINT in each app) and
// sends them, with the Dapr sidecars' spans, to Application Insights. Its Dapr components
// are in dapr-components.bicep.
param location string
param tags object
param name string
param subnetId string
param logAnalyticsWorkspaceName string
@secure()
param appInsightsConnectionString string

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' existing = {
  name: logAnalyticsWorkspaceName
}

// openTelemetryConfiguration exists only in preview API versions (2025-10-02-preview is the
// newest); the stable 2026-01-01 has none. The apps look this environment up at 2026-01-01.
resource environment 'Microsoft.App/managedEnvironments@2025-10-02-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    // Console lines land whole in ContainerAppConsoleLogs_CL's Log_s, which the alerts and
    // the workbook parse (alerts.bicep). With dynamicJsonColumns a JSON line would be split
    // into Log_<key>_s columns and Log_s left empty (microsoft/azure-container-apps#754).
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
        dynamicJsonColumns: false
      }
    }
    appInsightsConfiguration: {
      connectionString: appInsightsConnectionString
    }
    openTelemetryConfiguration: {
      tracesConfiguration: {
        destinations: ['appInsights']
        // The sidecars' spans go the same way, in the same traces; daprAIConnectionString
        // would send them a second time.
        includeDapr: true
      }
    }
    vnetConfiguration: {
      infrastructureSubnetId: subnetId
      internal: true
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: false
  }
}

output id string = environment.id
output name string = environment.name
