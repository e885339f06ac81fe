// The Dapr components of the Container Apps environment: the same as components/ (names,
// types, versions, scopes, ignoreErrors, initTimeout; tests/infra/contract.yaml), with
// Azure's connection metadata, and the binding's resiliency policy. The Azure-mode tests
// give daprd the sqldb component exactly as declared here (tests/infra/app_env.py). The apps depend on this module, so no
// sidecar starts before its components exist.
param environmentName string
param batchAppId string
param orderProcessorAppId string
param postgresHost string
param databaseName string
param dataIdentityName string
param dataIdentityClientId string
@minValue(1)
@description('How often the cron binding triggers batch, in seconds (components/cron.yaml: the same locally).')
param cronPeriodSeconds int

resource environment 'Microsoft.App/managedEnvironments@2026-01-01' existing = {
  name: environmentName
}

// components/cron.yaml
resource cron 'Microsoft.App/managedEnvironments/daprComponents@2026-01-01' = {
  parent: environment
  name: 'cron'
  properties: {
    componentType: 'bindings.cron'
    version: 'v1'
    metadata: [
      { name: 'schedule', value: '@every ${cronPeriodSeconds}s' }
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
    // A sidecar that cannot log in yet (before the bootstrap has created the role) starts
    // without the binding instead of exiting: a crash-looping sidecar can fail the revision
    // (daprdContainerCrashing). order-processor restarts its sidecar once its own database
    // login works and the binding is still missing.
    ignoreErrors: true
    // How long the binding may take to sign in when the sidecar starts (Dapr's default:
    // 5 s): a token from the managed identity endpoint, TLS and the Entra login, which
    // the Azure-mode tests measure at home (docs/azure.md#signing-in-as-azure-does-at-home).
    initTimeout: '20s'
    metadata: [
      {
        name: 'connectionString'
        // verify-full: the managed daprd takes no CA file, so it checks the server against
        // its system roots, which hold the roots Azure's server certificates chain to. The
        // binding's SQL names its table with the schema, so no search_path is set.
        value: 'host=${postgresHost} port=5432 dbname=${databaseName} user=${dataIdentityName} sslmode=verify-full'
      }
      { name: 'useAzureAD', value: 'true' }
      { name: 'azureClientId', value: dataIdentityClientId }
      { name: 'direction', value: 'output' }
    ]
    scopes: [orderProcessorAppId]
  }
}

// components/resiliency.yaml. Dapr resiliency policies for components exist in Container
// Apps only in preview API versions: this child uses one (the newest, 2025-10-02-preview), as
// does the environment (environment.bicep).
resource sqldbResiliency 'Microsoft.App/managedEnvironments/daprComponents/resiliencyPolicies@2025-10-02-preview' = {
  parent: sqldb
  name: 'sqldb-resiliency'
  properties: {
    outboundPolicy: {
      timeoutPolicy: {
        responseTimeoutInSeconds: 5
      }
      httpRetryPolicy: {
        maxRetries: 2
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
