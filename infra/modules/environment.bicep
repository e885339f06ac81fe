// The Container Apps environment: VNet-integrated and internal (its endpoint is a private
// IP in the VNet, so no app can be reached from the internet), workload profiles with
// Consumption, logs to Log Analytics, Dapr traces to Application Insights. Its Dapr
// components are in dapr-components.bicep.
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

resource environment 'Microsoft.App/managedEnvironments@2026-01-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    daprAIConnectionString: appInsightsConnectionString
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
