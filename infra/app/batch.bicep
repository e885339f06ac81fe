// The batch container app, whole: main.bicep provisions it through this module, and
// `azd deploy` deploys this file again with the image it just pushed (azd's deploy-time
// Bicep, "controlled revisions": azure.yaml `module: app/batch`, batch.parameters.json).
// The Dapr cron binding triggers it; no ingress, exactly one replica.
param location string
@description('Name of the azd environment (the azd-env-name tag).')
param environmentName string
param name string
param containerAppsEnvironmentName string
param registryName string
@description('Identity that pulls images; not available to the app at run time.')
param pullIdentityName string
@description('Image to run; empty keeps the current one, or the placeholder on a first provision.')
param image string = ''
@description('Whether the app exists already: SERVICE_BATCH_RESOURCE_EXISTS on provision, true on deploy.')
param exists bool = false

var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var port = 6002

resource environment 'Microsoft.App/managedEnvironments@2026-01-01' existing = {
  name: containerAppsEnvironmentName
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' existing = {
  name: registryName
}

resource pullIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' existing = {
  name: pullIdentityName
}

resource currentApp 'Microsoft.App/containerApps@2026-01-01' existing = if (exists && empty(image)) {
  name: name
}

var effectiveImage = empty(image) ? (exists ? currentApp!.properties.template.containers[0].image : placeholderImage) : image
// Dapr, probes and Dapr's app health check only for our image: the placeholder listens on
// port 80, not on `port`. Not `exists`: an app that exists may still run the placeholder
// (a first deploy failed). No sidecar while the placeholder runs: daprd waits until
// something listens on its appPort ("waiting on port ...") and answers /v1.0/healthz 500
// meanwhile, and Container Apps restarts a sidecar that never gets ready until the
// revision fails (daprdContainerCrashing: microsoft/azure-container-apps#1182, #1065,
// #354). Dapr off rather than appPort 80: the placeholder revision then gets no cron tick
// and no binding signs in before the bootstrap has created its role. `azd deploy` turns
// Dapr on with our image (tests/infra/test_app_modules.py, test_sidecar_live.py).
var runsAppImage = effectiveImage != placeholderImage

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

resource app 'Microsoft.App/containerApps@2026-01-01' = {
  name: name
  location: location
  tags: {
    'azd-env-name': environmentName
    'azd-service-name': 'batch'
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${pullIdentity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [
        {
          server: registry.properties.loginServer
          identity: pullIdentity.id
        }
      ]
      identitySettings: [
        {
          identity: pullIdentity.id
          lifecycle: 'None'
        }
      ]
      // No sidecar while the placeholder runs: it would wait on `port` (runsAppImage).
      dapr: {
        enabled: runsAppImage
        appId: 'batch'
        appPort: port
        appProtocol: 'http'
        appHealth: {
          enabled: runsAppImage
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
          name: 'batch'
          image: effectiveImage
          env: [
            { name: 'RUST_LOG', value: 'info' }
          ]
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          probes: runsAppImage ? probes : []
        }
      ]
      // Cron fires on every replica and never at zero: exactly one.
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
      // The sidecar gives its app about 5 s; leave room for both.
      terminationGracePeriodSeconds: 15
    }
  }
}
