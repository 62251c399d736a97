// The function app on the Flex Consumption plan, and the app settings it
// reads. Every app setting is in `appSettings` below; tests/test_infra.py
// compares its keys with settings.SETTINGS.

param name string
param planName string
param location string
param tags object

// Identity
param identityId string
param identityClientId string

// Storage (AzureWebJobsStorage and the deployment package)
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param deploymentContainerName string

// Dependencies the code reads through settings.py
param applicationInsightsName string
param durableTaskEndpoint string
param taskHubName string
@description('The Azure OpenAI account\'s v1 base URL, https://<name>.openai.azure.com/openai/v1.')
param openAiEndpoint string
param openAiDeploymentName string
param redisHostName string
param redisPort int

// Scale (see infra/README.md, "Scale settings")
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int

@description('STREAM_MAX_SECONDS: a stream response ends after this long and the client resumes. It must stay well under the 230 s the HTTP front end allows a response.')
@minValue(10)
@maxValue(200)
param streamMaxSeconds int

// Agent runs one durable-group instance executes at once. The agent entity
// handler is synchronous and holds one Python worker thread for the whole run
// (the model call itself is awaited on the framework's own event loop), so the
// worker's thread pool must be as large as host.json's
// extensions.durableTask.maxConcurrentEntityFunctions; without it Python
// sizes the pool from the CPU count (5 threads on the 1 vCPU of a 2,048 MB
// instance). tests/test_infra.py checks the two agree.
var agentRunsPerInstance = 16

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var appSettings = {
  // Host storage through the managed identity: no account key anywhere.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint

  // Telemetry signed with the identity (local auth is off on the component): the host's own with the
  // authentication string; the app's traces and metrics (travelplanner/telemetry.py, which reads the
  // connection string) with AZURE_CLIENT_ID's managed identity.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The Python worker makes each invocation's spans children of the host's request (its traceparent).
  PYTHON_ENABLE_OPENTELEMETRY: 'true'

  // The HTTP streams feature (FastAPI Request/StreamingResponse) needs this on
  // Python 3.12 and earlier. The 3.13+ worker (azure-functions-runtime) indexes
  // at start-up anyway; the setting stays so a move back to 3.12 keeps streaming.
  PYTHON_ENABLE_INIT_INDEXING: '1'
  PYTHON_THREADPOOL_THREAD_COUNT: string(agentRunsPerInstance)

  // Read by the code through settings.py.
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${durableTaskEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
  TASKHUB_NAME: taskHubName
  // Ends in /openai/v1: the app uses it as an OpenAI-compatible base URL, with no api-version
  // (AZURE_OPENAI_API_VERSION stays unset).
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT_NAME: openAiDeploymentName
  AZURE_CLIENT_ID: identityClientId
  REDIS_CONNECTION_STRING: 'rediss://${redisHostName}:${redisPort}'
  REDIS_AUTH: 'entra'
  STREAM_MAX_SECONDS: string(streamMaxSeconds)
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      // Python 3.13: GA on Flex Consumption, and the newest version whose worker
      // (azure-functions-runtime, pinned in requirements.txt) the tests run the app under
      // (see infra/README.md, "Python version").
      runtime: {
        name: 'python'
        version: '3.13'
      }
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: appSettings
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
