// Three user-assigned identities, each for one purpose: pulling images (AcrPull, nothing
// else), the app's data access (an ordinary PostgreSQL role, on order-processor only), and
// the PostgreSQL Microsoft Entra administrator (used only by the bootstrap job).
param location string
param tags object
param pullName string
param dataName string
param adminName string

resource pull 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: pullName
  location: location
  tags: tags
}

resource data 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: dataName
  location: location
  tags: tags
}

resource admin 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: adminName
  location: location
  tags: tags
}

output pullId string = pull.id
output pullName string = pull.name
output pullPrincipalId string = pull.properties.principalId
output dataId string = data.id
output dataName string = data.name
output dataClientId string = data.properties.clientId
output dataPrincipalId string = data.properties.principalId
output adminId string = admin.id
output adminName string = admin.name
output adminClientId string = admin.properties.clientId
output adminPrincipalId string = admin.properties.principalId
