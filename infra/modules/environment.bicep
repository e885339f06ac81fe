// The Container Apps environment: VNet-integrated and internal (its endpoint is a private
// IP in the VNet, so no app can be reached from the internet),
// workload profiles with Consumption, logs to Log Analytics, Dapr traces to Application
// Insights. It holds the same Dapr components as components/ (names, types, versions,
// scopes), with Azure's connection metadata, and the binding's resiliency policy.
param location string
param tags object
param name string
param subnetId string
param logAnalyticsWorkspaceName string
@secure()
param appInsightsConnectionString string
param batchAppId string
param orderProcessorAppId string
param postgresHost string
param databaseName string
param dataIdentityName string
param dataIdentityClientId string

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

// components/cron.yaml
resource cron 'Microsoft.App/managedEnvironments/daprComponents@2026-01-01' = {
  parent: environment
  name: 'cron'
  properties: {
    componentType: 'bindings.cron'
    version: 'v1'
    metadata: [
      { name: 'schedule', value: '@every 10s' }
      { name: 'direction', value: 'input' }
    ]
    scopes: [batchAppId]
  }
}

// components/sqldb.yaml: Microsoft Entra ID with the app's identity, no password.
resource sqldb 'Microsoft.App/managedEnvironments/daprComponents@2026-01-01' = {
  parent: environment
  name: 'sqldb'
  properties: {
    componentType: 'bindings.postgresql'
    version: 'v1'
    metadata: [
      {
        name: 'connectionString'
        value: 'host=${postgresHost} port=5432 dbname=${databaseName} user=${dataIdentityName} sslmode=require'
      }
      { name: 'useAzureAD', value: 'true' }
      { name: 'azureClientId', value: dataIdentityClientId }
      { name: 'direction', value: 'output' }
    ]
    scopes: [orderProcessorAppId]
  }
}

// components/resiliency.yaml. Dapr resiliency policies for components exist in Container
// Apps only in preview API versions: this child alone uses one (the newest, 2025-10-02-preview).
resource sqldbResiliency 'Microsoft.App/managedEnvironments/daprComponents/resiliencyPolicies@2025-10-02-preview' = {
  parent: sqldb
  name: 'sqldb-resiliency'
  properties: {
    outboundPolicy: {
      timeoutPolicy: {
        responseTimeoutInSeconds: 10
      }
      httpRetryPolicy: {
        maxRetries: 3
        retryBackOff: {
          initialDelayInMilliseconds: 500
          maxIntervalInMilliseconds: 2000
        }
      }
      circuitBreakerPolicy: {
        consecutiveErrors: 5
        timeoutInSeconds: 15
        intervalInSeconds: 30
      }
    }
  }
}

output id string = environment.id
output name string = environment.name
