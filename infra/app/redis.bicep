// Azure Managed Redis: the run log (one Redis stream per conversation).
// TLS only, access keys disabled: clients sign in with Microsoft Entra ID
// (redis-entraid). The access policy assignments are in rbac.bicep.

param name string
param location string
param tags object

@description('Azure Managed Redis SKU, e.g. Balanced_B0 (0.5 GB), Balanced_B1 (1 GB), Balanced_B3 (3 GB).')
param skuName string

@allowed([
  'Enabled'
  'Disabled'
])
@description('Enabled: a replica and the availability SLA. Disabled: about half the price, for development.')
param highAvailability string

var port = 10000 // the only port Azure Managed Redis serves

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    highAvailability: highAvailability
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }

  resource database 'databases' = {
    name: 'default' // Azure Managed Redis has exactly one database, named 'default'.
    properties: {
      clientProtocol: 'Encrypted'
      port: port
      // One non-sharded endpoint: the app uses a plain (not cluster-aware)
      // redis-py client, and XREAD over several streams must not hit CROSSSLOT.
      // Valid up to 25 GB.
      clusteringPolicy: 'NoCluster'
      // Every stream key carries a sliding TTL, so under memory pressure the
      // least recently used streams (finished conversations) go first instead
      // of live runs failing their writes.
      evictionPolicy: 'VolatileLRU'
      accessKeysAuthentication: 'Disabled'
    }
  }
}

output name string = cluster.name
output hostName string = cluster.properties.hostName
output port int = port
