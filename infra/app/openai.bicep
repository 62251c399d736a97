// Azure OpenAI account and the chat model deployment the agent calls.
// Keys are disabled: callers need Cognitive Services OpenAI User (rbac.bicep).

param name string
param location string
param tags object

param deploymentName string
param modelName string
param modelVersion string

@description('Deployment type, e.g. GlobalStandard or Standard.')
param deploymentSkuName string

@description('Throughput in thousands of tokens per minute (TPM); must fit your subscription quota for the model in this region.')
param capacity int

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name // Entra ID tokens need the custom subdomain endpoint.
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource chatDeployment 'Microsoft.CognitiveServices/accounts/deployments@2025-06-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: deploymentSkuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = chatDeployment.name
