// One Dapr-enabled container app without ingress: the only way in is its Dapr sidecar.
// On a first provision it runs a placeholder image (azd deploys the real one); after
// that the image in place is kept (the azd `exists` pattern) and the health probes apply.
param location string
param tags object
param name string
@description('Whether the app exists already; then its current image is kept.')
param exists bool
param environmentId string
param registryServer string
@description('Identity that pulls images; not available to the app at run time.')
param pullIdentityId string
@description('Identities the app itself uses, as a userAssignedIdentities object.')
param runtimeIdentities object
param daprAppId string
param port int
param minReplicas int
param maxReplicas int
param env array

var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'

resource existingApp 'Microsoft.App/containerApps@2026-01-01' existing = if (exists) {
  name: name
}

var image = exists ? existingApp!.properties.template.containers[0].image : placeholderImage

// Health probes need the real image: the placeholder listens elsewhere.
var probes = [
  {
    type: 'Liveness'
    httpGet: {
      path: '/healthz'
      port: port
    }
    periodSeconds: 10
    failureThreshold: 3
  }
  {
    type: 'Readiness'
    httpGet: {
      path: '/readyz'
      port: port
    }
    periodSeconds: 5
    failureThreshold: 3
  }
]

var cpuScaleRule = {
  name: 'cpu'
  custom: {
    type: 'cpu'
    metadata: {
      type: 'Utilization'
      value: '70'
    }
  }
}

resource app 'Microsoft.App/containerApps@2026-01-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: union({ '${pullIdentityId}': {} }, runtimeIdentities)
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
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
      dapr: {
        enabled: true
        appId: daprAppId
        appPort: port
        appProtocol: 'http'
        appHealth: {
          enabled: exists
          path: '/healthz'
          probeIntervalSeconds: 5
          probeTimeoutMilliseconds: 1000
          threshold: 3
        }
        enableApiLogging: false
        logLevel: 'info'
      }
    }
    template: {
      containers: [
        {
          name: daprAppId
          image: image
          env: concat(env, [
            { name: 'RUST_LOG', value: 'info' }
          ])
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          probes: exists ? probes : []
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: maxReplicas > minReplicas ? [cpuScaleRule] : []
      }
      // The sidecar gives its app about 5 s; leave room for both.
      terminationGracePeriodSeconds: 15
    }
  }
}

output name string = app.name
output image string = image
