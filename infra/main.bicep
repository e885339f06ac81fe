// dapr-rust-aca on Azure: two Dapr-enabled container apps in a VNet-integrated Container
// Apps environment, PostgreSQL Flexible Server with private access and Microsoft Entra ID
// authentication only, an Azure Container Registry pulled from by a managed identity, and
// Log Analytics + Application Insights (also Dapr's tracing). See docs/azure.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used to name and tag every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource.')
param location string

@description('Whether the batch app exists already (set by azd), so its image is kept.')
param batchExists bool = false

@description('Whether the order-processor app exists already (set by azd), so its image is kept.')
param orderProcessorExists bool = false

@allowed(['16', '17'])
@description('PostgreSQL major version.')
param postgresVersion string = '17'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var databaseName = 'orders'
// The Dapr app ids, also the names the code and components/ use (checked by the
// consistency test, tests/infra/test_consistency.py).
var batchAppId = 'batch'
var orderProcessorAppId = 'order-processor'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

module identities 'modules/identities.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    pullName: '${abbrs.managedIdentityUserAssignedIdentities}pull-${resourceToken}'
    dataName: '${abbrs.managedIdentityUserAssignedIdentities}orders-data-${resourceToken}'
    adminName: '${abbrs.managedIdentityUserAssignedIdentities}pg-admin-${resourceToken}'
  }
}

module registry 'modules/registry.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.containerRegistryRegistries}${resourceToken}'
    pullPrincipalId: identities.outputs.pullPrincipalId
  }
}

var postgresServerName = '${abbrs.dBforPostgreSQLServers}${resourceToken}'

module network 'modules/network.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    postgresDnsZoneName: '${postgresServerName}.private.postgres.database.azure.com'
  }
}

module postgres 'modules/postgres.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    name: postgresServerName
    version: postgresVersion
    databaseName: databaseName
    subnetId: network.outputs.postgresSubnetId
    privateDnsZoneId: network.outputs.postgresDnsZoneId
    adminPrincipalId: identities.outputs.adminPrincipalId
    adminName: identities.outputs.adminName
  }
}

module environment 'modules/environment.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.appManagedEnvironments}${resourceToken}'
    subnetId: network.outputs.appsSubnetId
    logAnalyticsWorkspaceName: monitoring.outputs.workspaceName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    batchAppId: batchAppId
    orderProcessorAppId: orderProcessorAppId
    postgresHost: postgres.outputs.host
    databaseName: databaseName
    dataIdentityName: identities.outputs.dataName
    dataIdentityClientId: identities.outputs.dataClientId
  }
}

module batch 'modules/container-app.bicep' = {
  scope: rg
  params: {
    location: location
    name: '${abbrs.appContainerApps}batch-${resourceToken}'
    tags: union(tags, { 'azd-service-name': 'batch' })
    exists: batchExists
    environmentId: environment.outputs.id
    registryServer: registry.outputs.loginServer
    pullIdentityId: identities.outputs.pullId
    runtimeIdentities: {}
    daprAppId: batchAppId
    port: 6002
    // Cron fires on every replica and never at zero: exactly one.
    minReplicas: 1
    maxReplicas: 1
    env: []
  }
}

module orderProcessor 'modules/container-app.bicep' = {
  scope: rg
  params: {
    location: location
    name: '${abbrs.appContainerApps}orderproc-${resourceToken}'
    tags: union(tags, { 'azd-service-name': 'order-processor' })
    exists: orderProcessorExists
    environmentId: environment.outputs.id
    registryServer: registry.outputs.loginServer
    pullIdentityId: identities.outputs.pullId
    runtimeIdentities: { '${identities.outputs.dataId}': {} }
    daprAppId: orderProcessorAppId
    port: 6001
    // Dapr service invocation does not go through the HTTP scaler: never zero.
    minReplicas: 1
    maxReplicas: 3
    env: [
      { name: 'DB_HOST', value: postgres.outputs.host }
      { name: 'DB_NAME', value: databaseName }
      { name: 'DB_USER', value: identities.outputs.dataName }
      { name: 'AZURE_CLIENT_ID', value: identities.outputs.dataClientId }
      // Until the bootstrap job has created its role, the app keeps retrying.
      { name: 'DB_STARTUP_TIMEOUT_SECS', value: '900' }
    ]
  }
}

module bootstrap 'modules/bootstrap-job.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.appJobs}bootstrap-${resourceToken}'
    environmentId: environment.outputs.id
    registryServer: registry.outputs.loginServer
    pullIdentityId: identities.outputs.pullId
    adminIdentityId: identities.outputs.adminId
    image: orderProcessor.outputs.image
    env: [
      { name: 'DB_HOST', value: postgres.outputs.host }
      { name: 'DB_NAME', value: databaseName }
      { name: 'DB_ADMIN_USER', value: identities.outputs.adminName }
      { name: 'AZURE_CLIENT_ID', value: identities.outputs.adminClientId }
      { name: 'APP_ROLE', value: identities.outputs.dataName }
      { name: 'APP_ROLE_OBJECT_ID', value: identities.outputs.dataPrincipalId }
    ]
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = environment.outputs.name
output AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID string = monitoring.outputs.workspaceCustomerId
output SERVICE_BATCH_NAME string = batch.outputs.name
output SERVICE_ORDER_PROCESSOR_NAME string = orderProcessor.outputs.name
output BOOTSTRAP_JOB_NAME string = bootstrap.outputs.name
output POSTGRES_SERVER_NAME string = postgres.outputs.name
output POSTGRES_DATABASE string = databaseName
