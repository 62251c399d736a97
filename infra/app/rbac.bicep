// Every grant in the deployment, in one place: what the app's identity may do,
// and (when principalId is given) what the deploying user may do to run the
// app locally against the same cloud resources.

@description('Principal (object) id of the app\'s user-assigned identity.')
param identityPrincipalId string

@description('Object id of the deploying user or service principal; empty: no grants.')
param userPrincipalId string

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string

param storageAccountName string
param schedulerName string
param openAiAccountName string
param applicationInsightsName string
param redisName string

// Built-in role definition ids.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402'
var cognitiveServicesOpenAIUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// Azure Managed Redis data access is not Azure RBAC but an access policy
// assignment on the database; 'default' is the read/write data policy.
var redisDataAccessPolicy = 'default'

// The host keeps its keys, leases and timers in blobs, queues and tables.
var storageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

var grantUser = !empty(userPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' existing = {
  name: schedulerName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2025-06-01' existing = {
  name: openAiAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource redis 'Microsoft.Cache/redisEnterprise@2025-07-01' existing = {
  name: redisName

  resource database 'databases' existing = {
    name: 'default'
  }
}

// ---- The app's identity ----

resource appStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoles: {
    name: guid(storage.id, identityPrincipalId, roleId)
    scope: storage
    properties: {
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource appDurableTask 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scheduler.id, identityPrincipalId, durableTaskDataContributor)
  scope: scheduler
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
  }
}

resource appOpenAi 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAi.id, identityPrincipalId, cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAIUser)
  }
}

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, identityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

// Assignment names must be alphanumeric, hence the guid without hyphens.
resource appRedis 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: redis::database
  name: replace(guid(redis::database.id, identityPrincipalId, redisDataAccessPolicy), '-', '')
  properties: {
    accessPolicyName: redisDataAccessPolicy
    user: {
      objectId: identityPrincipalId
    }
  }
}

// ---- The deploying user (optional) ----

resource userStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in (grantUser ? storageRoles : []): {
    name: guid(storage.id, userPrincipalId, roleId)
    scope: storage
    properties: {
      principalId: userPrincipalId
      principalType: userPrincipalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource userDurableTask 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(scheduler.id, userPrincipalId, durableTaskDataContributor)
  scope: scheduler
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
  }
}

resource userOpenAi 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(openAi.id, userPrincipalId, cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAIUser)
  }
}

resource userRedis 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = if (grantUser) {
  parent: redis::database
  name: replace(guid(redis::database.id, userPrincipalId, redisDataAccessPolicy), '-', '')
  properties: {
    accessPolicyName: redisDataAccessPolicy
    user: {
      objectId: userPrincipalId
    }
  }
  // The database accepts one access policy change at a time.
  dependsOn: [
    appRedis
  ]
}
