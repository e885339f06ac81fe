// The bootstrap job: runs `order-processor bootstrap` inside the VNet as the PostgreSQL
// Microsoft Entra administrator, to create the app's database (owned by the administrator)
// and the role of the app's identity. Before each deploy of order-processor, its
// postpublish hook (infra/hooks/bootstrap.py) points it at the image just pushed and starts
// it; on provision it gets the app's current image or the placeholder. Safe to run again.
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
