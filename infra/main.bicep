// TravelPlanner on Azure: wiring only. Each module owns one concern; every
// grant is in app/rbac.bicep. See infra/README.md.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource (Azure OpenAI can be elsewhere, see openAiLocation). It must offer Flex Consumption, Durable Task Scheduler and Azure Managed Redis.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying principal; azd fills it in. Empty: no grants for local runs.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// ---- Azure OpenAI ----

@description('Region of the Azure OpenAI account when the model is not offered in `location`; empty: `location`.')
param openAiLocation string = ''

// The default model: GA, retires 2028-01-11 (the longest horizon of the GA chat models in
// Microsoft's retirement schedule, checked 2026-11-29; infra/README.md has the table and source).
// The preprovision hook (infra/scripts/check_model.py) checks these four against the region and
// the subscription's quota before anything is created; it reads the same azd variables.
@description('Azure OpenAI model; it must be offered in the OpenAI account\'s region with the deployment SKU.')
param openAiModelName string = 'gpt-5.6-luna'
@description('Model version: a date, as listed by `az cognitiveservices model list`.')
param openAiModelVersion string = '2026-07-09'
param openAiDeploymentName string = 'chat'
@description('Deployment type, e.g. GlobalStandard, DataZoneStandard or Standard.')
param openAiDeploymentSkuName string = 'GlobalStandard'

@description('Thousands of tokens per minute for the chat deployment.')
@minValue(1)
param openAiDeploymentCapacity int = 30

// ---- Scale (reasoning in infra/README.md) ----

@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 32

@minValue(10)
@maxValue(200)
param streamMaxSeconds int = 120

// ---- Durable Task Scheduler and Redis ----

@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSkuName string = 'Consumption'
param taskHubName string = 'default'

param redisSkuName string = 'Balanced_B0'

@allowed([
  'Enabled'
  'Disabled'
])
param redisHighAvailability string = 'Enabled'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module durableTask 'app/durable-task.bicep' = {
  name: 'durable-task'
  scope: rg
  params: {
    name: 'dts-${resourceToken}'
    location: location
    tags: tags
    taskHubName: taskHubName
    skuName: durableTaskSkuName
  }
}

module redis 'app/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    name: 'redis-${resourceToken}'
    location: location
    tags: tags
    skuName: redisSkuName
    highAvailability: redisHighAvailability
  }
}

module openAi 'app/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: empty(openAiLocation) ? location : openAiLocation
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    deploymentSkuName: openAiDeploymentSkuName
    capacity: openAiDeploymentCapacity
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    durableTaskEndpoint: durableTask.outputs.endpoint
    taskHubName: durableTask.outputs.taskHubName
    openAiEndpoint: openAi.outputs.v1Endpoint
    openAiDeploymentName: openAi.outputs.deploymentName
    redisHostName: redis.outputs.hostName
    redisPort: redis.outputs.port
    instanceMemoryMB: flexInstanceMemoryMB
    maximumInstanceCount: flexMaximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    streamMaxSeconds: streamMaxSeconds
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    storageAccountName: storage.outputs.name
    schedulerName: durableTask.outputs.name
    openAiAccountName: openAi.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    redisName: redis.outputs.name
  }
}

// azd stores these in the environment (`azd env get-values`).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name

output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.uri

// Not named AZURE_CLIENT_ID: that name would make local credential chains
// try to act as the app's identity.
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = identity.outputs.clientId

output REDIS_HOST string = redis.outputs.hostName
output REDIS_PORT int = redis.outputs.port
output REDIS_CONNECTION_STRING string = 'rediss://${redis.outputs.hostName}:${redis.outputs.port}'

output DURABLE_TASK_SCHEDULER_NAME string = durableTask.outputs.name
output DURABLE_TASK_SCHEDULER_ENDPOINT string = durableTask.outputs.endpoint
output TASKHUB_NAME string = durableTask.outputs.taskHubName

// The OpenAI-compatible v1 base URL (https://<account>.openai.azure.com/openai/v1), the same value
// the app gets: copied into local settings it keeps local runs on the same API surface.
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.v1Endpoint
output AZURE_OPENAI_DEPLOYMENT_NAME string = openAi.outputs.deploymentName
output AZURE_OPENAI_MODEL_NAME string = openAiModelName
// Read back by the preprovision hook on the next `azd up`: the deployment that already exists
// there holds quota that re-deploying it frees again.
output AZURE_OPENAI_ACCOUNT_NAME string = openAi.outputs.name

output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
