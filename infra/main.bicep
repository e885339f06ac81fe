// dapr-rust-aca on Azure: two Dapr-enabled container apps in a VNet-integrated Container
// Apps environment, PostgreSQL Flexible Server with private access and Microsoft Entra ID
// authentication only, an Azure Container Registry pulled from by a managed identity, and
// Log Analytics + Application Insights (also Dapr's tracing). See docs/azure.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used to name and tag every resource.')
param environmentName string

// Regions that offer both PostgreSQL Flexible Server without an access request and Container
// Apps (every environment there takes workload profiles: Consumption is in all its regions,
// MicrosoftDocs/azure-docs articles/container-apps/workload-profiles-overview.md). Sources:
// - PostgreSQL: MicrosoftDocs/azure-databases-docs articles/postgresql/includes/regions-table.md
//   (commit 2d9647fb, 2025-12-22), without the regions "available only upon request";
// - Container Apps: azure-docs articles/container-apps/sessions.md (its region table, 2025),
//   microsoft/azure-container-apps#1795 (six regions, 2026-07), #405 (South Central US);
// - left out: regions access-restricted for all of Azure (azure-docs
//   articles/reliability/regions-list.md: France South, Korea South, Norway West; Jio India,
//   reserved for Jio customers), and PostgreSQL regions no source here lists for Container
//   Apps (Australia Central, Austria East, Indonesia Central, Israel Central, Malaysia West,
//   Mexico Central, Qatar Central).
// To check a region: `az provider show -n Microsoft.App`, resource type managedEnvironments.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'belgiumcentral'
  'brazilsouth'
  'canadacentral'
  'canadaeast'
  'centralindia'
  'centralus'
  'chilecentral'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'japanwest'
  'koreacentral'
  'newzealandnorth'
  'northcentralus'
  'northeurope'
  'polandcentral'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'switzerlandnorth'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@description('Azure region for every resource.')
param location string

@description('Whether the batch app exists already (set by azd), so its image is kept.')
param batchExists bool = false

@description('Whether the order-processor app exists already (set by azd), so its image is kept.')
param orderProcessorExists bool = false

@allowed(['16', '17'])
@description('PostgreSQL major version.')
param postgresVersion string = '17'

@description('E-mail address for alert notifications (azd env variable ALERT_EMAIL); empty: none, the alerts still fire and show in the portal.')
param alertEmail string = ''

// One period for the cron binding and the alert that no run completes (six periods, at
// least 15 minutes). components/cron.yaml has the same schedule for local runs.
@minValue(1)
@maxValue(28800)
@description('How often the Dapr cron binding triggers batch, in seconds.')
param cronPeriodSeconds int = 10

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var databaseName = 'orders'
// The Dapr app ids (the components' scopes), also the names the code, components/ and
// infra/app/*.bicep use (checked by the consistency test, tests/infra/test_consistency.py).
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
  }
}

module daprComponents 'modules/dapr-components.bicep' = {
  scope: rg
  params: {
    environmentName: environment.outputs.name
    batchAppId: batchAppId
    orderProcessorAppId: orderProcessorAppId
    postgresHost: postgres.outputs.host
    databaseName: databaseName
    dataIdentityName: identities.outputs.dataName
    dataIdentityClientId: identities.outputs.dataClientId
    cronPeriodSeconds: cronPeriodSeconds
  }
}

var batchName = '${abbrs.appContainerApps}batch-${resourceToken}'
var orderProcessorName = '${abbrs.appContainerApps}orderproc-${resourceToken}'

// The apps are the files `azd deploy` deploys again (infra/app/*.parameters.json pass the
// same values from this file's outputs). No image here: each keeps the one it runs.
module batch 'app/batch.bicep' = {
  scope: rg
  params: {
    location: location
    environmentName: environmentName
    name: batchName
    containerAppsEnvironmentName: environment.outputs.name
    registryName: registry.outputs.name
    pullIdentityName: identities.outputs.pullName
    exists: batchExists
  }
  dependsOn: [daprComponents]
}

module orderProcessor 'app/order-processor.bicep' = {
  scope: rg
  params: {
    location: location
    environmentName: environmentName
    name: orderProcessorName
    containerAppsEnvironmentName: environment.outputs.name
    registryName: registry.outputs.name
    pullIdentityName: identities.outputs.pullName
    dataIdentityName: identities.outputs.dataName
    postgresServerName: postgres.outputs.name
    databaseName: databaseName
    exists: orderProcessorExists
  }
  dependsOn: [daprComponents]
}

// Alerts on the apps' logs and on PostgreSQL, all to one action group (docs/operations.md).
module alerts 'modules/alerts.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertEmail: alertEmail
    workspaceName: monitoring.outputs.workspaceName
    postgresServerName: postgres.outputs.name
    batchAppName: batchName
    orderProcessorAppName: orderProcessorName
    cronPeriodSeconds: cronPeriodSeconds
  }
}

// The operations dashboard (docs/operations.md#the-dashboard); the postdeploy hook prints its URL.
module workbook 'modules/workbook.bicep' = {
  scope: rg
  params: {
    location: location
    tags: tags
    environmentName: environmentName
    workspaceName: monitoring.outputs.workspaceName
    batchAppName: batchName
    orderProcessorAppName: orderProcessorName
  }
}

// Before each deploy of order-processor, its postpublish hook (infra/hooks/bootstrap.py)
// points this job at the image just pushed and runs it.
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
    image: orderProcessor.outputs.SERVICE_ORDER_PROCESSOR_IMAGE_NAME
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
output AZURE_PULL_IDENTITY_NAME string = identities.outputs.pullName
output AZURE_ORDERS_DATA_IDENTITY_NAME string = identities.outputs.dataName
output SERVICE_BATCH_NAME string = batchName
output SERVICE_ORDER_PROCESSOR_NAME string = orderProcessorName
output BOOTSTRAP_JOB_NAME string = bootstrap.outputs.name
output POSTGRES_SERVER_NAME string = postgres.outputs.name
output POSTGRES_DATABASE string = databaseName
output AZURE_WORKBOOK_URL string = workbook.outputs.url
