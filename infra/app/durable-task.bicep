// Durable Task Scheduler and the task hub the agent entities run in
// (host.json: storageProvider type azureManaged).

param name string
param location string
param tags object
param taskHubName string

@allowed([
  'Consumption'
  'Dedicated'
])
@description('Consumption bills per dispatched work item; Dedicated reserves capacity units.')
param skuName string

@description('Capacity units; used by the Dedicated SKU only.')
param dedicatedCapacity int = 1

var dedicated = skuName == 'Dedicated'

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // The data plane is Entra ID only (Durable Task Data Contributor in
    // rbac.bicep). The allow list must not be empty: an empty list denies all
    // traffic, and Flex Consumption has no fixed outbound address to list.
    ipAllowlist: [
      '0.0.0.0/0'
    ]
    // Capacity units exist only on the Dedicated SKU; Consumption takes the name alone.
    sku: dedicated ? {
      name: skuName
      capacity: dedicatedCapacity
    } : {
      name: skuName
    }
  }

  resource taskHub 'taskHubs' = {
    name: taskHubName
  }
}

output name string = scheduler.name
output endpoint string = scheduler.properties.endpoint
output taskHubName string = scheduler::taskHub.name
