// The bootstrap job: runs `order-processor bootstrap` inside the VNet as the PostgreSQL
// Microsoft Entra administrator, to create the role of the app's identity and the schema
// it owns. It is started by the postdeploy hook (infra/hooks/postdeploy.sh) once the
// order-processor image exists; safe to run again.
param location string
param tags object
param name string
param environmentId string
param registryServer string
param pullIdentityId string
@description('The PostgreSQL Entra administrator identity; only this job has it.')
param adminIdentityId string
param image string
param env array

resource job 'Microsoft.App/jobs@2026-01-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${pullIdentityId}': {}
      '${adminIdentityId}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Manual'
      replicaTimeout: 600
      replicaRetryLimit: 1
      manualTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
      }
      registries: [
        {
          server: registryServer
          identity: pullIdentityId
        }
      ]
      identitySettings: [
        {
          identity: pullIdentityId
          lifecycle: 'None'
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'bootstrap'
          image: image
          args: ['bootstrap']
          env: concat(env, [
            { name: 'RUST_LOG', value: 'info' }
          ])
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
        }
      ]
    }
  }
}

output name string = job.name
