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
    // Stay on the version deployed (and tested) until it retires, then take the successor
    // Azure designates, instead of a deployment that only returns errors.
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

var accountEndpoint = account.properties.endpoint // https://<name>.openai.azure.com/

output name string = account.name
output endpoint string = accountEndpoint
// The OpenAI-compatible v1 API: the client uses it as its base URL and sends no api-version,
// so a model that needs a newer API version works without a change to the app.
output v1Endpoint string = endsWith(accountEndpoint, '/') ? '${accountEndpoint}openai/v1' : '${accountEndpoint}/openai/v1'
output deploymentName string = chatDeployment.name
