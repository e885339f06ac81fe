// PostgreSQL Flexible Server with private access only (delegated subnet, private DNS
// zone, public network access off), Microsoft Entra ID authentication only (password
// authentication off, no administrator password anywhere), TLS required. The Entra
// administrator is a managed identity used only by the bootstrap job.
param location string
param tags object
param name string
param version string
param subnetId string
param privateDnsZoneId string
param adminPrincipalId string
param adminName string

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard_B1ms'
    tier: 'Burstable'
  }
  properties: {
    version: version
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    network: {
      delegatedSubnetResourceId: subnetId
      privateDnsZoneArmResourceId: privateDnsZoneId
      publicNetworkAccess: 'Disabled'
    }
    storage: {
      storageSizeGB: 32
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
  }
}

// Changes to one server are serialised: each child waits for the previous one.
resource admin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2025-08-01' = {
  parent: server
  name: adminPrincipalId
  properties: {
    principalName: adminName
    principalType: 'ServicePrincipal'
    tenantId: tenant().tenantId
  }
}

resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2025-08-01' = {
  parent: server
  name: 'require_secure_transport'
  properties: {
    value: 'on'
    source: 'user-override'
  }
  dependsOn: [admin]
}

// No flexibleServers/databases resource: the bootstrap job creates the app's database as
// the Entra administrator, so that the administrator really owns it. A database created
// through ARM may be owned by the service's superuser (azuresu), and then the
// administrator's GRANT on it only warns.

output name string = server.name
output host string = server.properties.fullyQualifiedDomainName
