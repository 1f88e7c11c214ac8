// fleetscore on Azure: Storage (tables, checkpoints), Event Hubs, Key Vault, the Function App with
// its managed identity and every app setting the code reads, Application Insights, and the role
// assignments that let the app reach Event Hubs, Storage and Key Vault without a key.
//
// azuredeploy.json is this file as ARM JSON, kept 1:1 by hand (infra/README.md says why);
// tests/infra/test_template.py checks both against shared/settings.py and the function.json files.
//
// Deploy (see README.md "Deploying to Azure"):
//   az deployment group create -g <rg> --template-file infra/main.bicep \
//     --parameters amlEndpointUrl=<scoring uri> amlEndpointKey=<key>

targetScope = 'resourceGroup'

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Start of every resource name: 3-11 lowercase letters and digits, first a letter (storage and Key Vault names are built from it).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'fleet'

@description('Hosting plan of the Function App.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param planType string = 'FlexConsumption'

@description('Elastic Premium size (planType ElasticPremium only).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Most instances Flex Consumption scales out to (planType FlexConsumption only).')
@minValue(1)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance in MB.')
@allowed([
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@description('Partitions of the readings hub: the most score hosts that can read at once. Fixed once created on the Standard tier.')
@minValue(1)
@maxValue(32)
param partitionCount int = 8

@description('Days the readings hub keeps events (Standard: 1-7).')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int = 1

@description('Throughput units of the Event Hubs namespace (Standard tier).')
@minValue(1)
@maxValue(40)
param eventHubsCapacity int = 1

@description('Create the predictions hub for Fabric Real-Time Intelligence (RESULTS_EVENTHUB_*).')
param deployResultsHub bool = false

@description('Prefix of the table names (TABLE_PREFIX): empty, or a letter then up to 19 letters and digits.')
@maxLength(20)
param tablePrefix string = ''

@description('Let Storage accept account keys. The app never uses one; Elastic Premium needs it for its Azure Files content share, and key-based tools (Storage Explorer with a key) do too.')
param storageSharedKeyAccess bool = true

@description('Scoring URI of the AML online endpoint (AML_ENDPOINT_URL), from `make aml-deploy`.')
param amlEndpointUrl string

@description('Key of the AML online endpoint; stored in Key Vault as aml-endpoint-key, the app reads it through a Key Vault reference.')
@secure()
param amlEndpointKey string

@description('Pin one AML deployment (AML_DEPLOYMENT); empty = the endpoint\'s traffic split.')
param amlDeployment string = ''

@description('Power BI workspace (group) id of the push dataset; empty = My workspace.')
param powerBiWorkspaceId string = ''

@description('Power BI push dataset id (from `python -m fleetscore powerbi create-dataset`); empty = Power BI off.')
param powerBiDatasetId string = ''

@description('Service principal tenant for Power BI; empty = the app\'s managed identity.')
param powerBiTenantId string = ''

@description('Service principal (or user-assigned identity) client id for Power BI.')
param powerBiClientId string = ''

@description('Service principal secret for Power BI; stored in Key Vault as powerbi-client-secret when given.')
@secure()
param powerBiClientSecret string = ''

@description('Push URL with key of a dataset made in the Power BI UI; stored in Key Vault as powerbi-push-url when given.')
@secure()
param powerBiPushUrl string = ''

var suffix = uniqueString(resourceGroup().id)
var isFlex = planType == 'FlexConsumption'
var storageAccountName = take('${namePrefix}${suffix}', 24)
var eventHubsNamespaceName = '${namePrefix}-ehns-${suffix}'
var keyVaultName = take('${namePrefix}kv${suffix}', 24)
var planName = '${namePrefix}-plan-${suffix}'
var functionAppName = '${namePrefix}-func-${suffix}'
var logAnalyticsName = '${namePrefix}-log-${suffix}'
var appInsightsName = '${namePrefix}-appi-${suffix}'
var readingsHubName = 'readings'
var scoringConsumerGroupName = 'scoring'
var resultsHubName = 'predictions'
// Where the Functions Event Hubs extension keeps checkpoints and partition ownership.
var checkpointContainerName = 'azure-webjobs-eventhub'
var deploymentContainerName = 'app-package'
var contentShareName = toLower(functionAppName)
var tableNames = [
  'Predictions'
  'Anomalies'
  'DeadLetters'
]
// Built-in role definitions (learn.microsoft.com, "Azure built-in roles").
var roles = {
  eventHubsDataSender: '2b629674-e913-4c01-ae53-ef4638d8f975'
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}
// Identity-based connections name endpoints, not keys. Public-cloud host names: Event Hubs
// namespaces are <name>.servicebus.windows.net there (change this line for a sovereign cloud).
var eventHubsHost = '${eventHubsNamespaceName}.servicebus.windows.net'
var tableServiceUri = 'https://${storageAccountName}.table.${environment().suffixes.storage}/'

// Every setting shared/settings.py reads (tests/infra/test_template.py holds them to it), plus
// the host's own. Connections go by identity: the `__fullyQualifiedNamespace` /
// `__tableServiceUri` / `__accountName` forms, never a key. Secrets are Key Vault references.
// Values known before deployment only; the Application Insights connection string is in
// runtimeSettings below.
var appSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: '1048576'
  EVENTHUB_CONNECTION__fullyQualifiedNamespace: eventHubsHost
  EVENTHUB_NAME: readingsHubName
  EVENTHUB_CONSUMER_GROUP: scoringConsumerGroupName
  TABLES_CONNECTION__tableServiceUri: tableServiceUri
  TABLE_PREFIX: tablePrefix
  TABLE_WRITE_CONCURRENCY: '16'
  AML_ENDPOINT_URL: amlEndpointUrl
  AML_ENDPOINT_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=aml-endpoint-key)'
  AML_DEPLOYMENT: amlDeployment
  AML_TIMEOUT_SECONDS: '30'
  SCORE_MAX_ROWS: '2000'
  SCORE_MAX_BYTES: '1048576'
  SCORE_MAX_CONCURRENCY: '4'
  SCORE_RETRY_DEADLINE_SECONDS: '60'
  STATE_CACHE_SECONDS: '300'
  POWERBI_API_URL: 'https://api.powerbi.com'
  POWERBI_WORKSPACE_ID: powerBiWorkspaceId
  POWERBI_DATASET_ID: powerBiDatasetId
  POWERBI_PUSH_URL: empty(powerBiPushUrl) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=powerbi-push-url)'
  POWERBI_INTERVAL_SECONDS: '60'
  POWERBI_WRITERS: '1'
  POWERBI_TENANT_ID: powerBiTenantId
  POWERBI_CLIENT_ID: powerBiClientId
  POWERBI_CLIENT_SECRET: empty(powerBiClientSecret) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=powerbi-client-secret)'
  POWERBI_ACCESS_TOKEN: ''
  RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace: deployResultsHub ? eventHubsHost : ''
  RESULTS_EVENTHUB_NAME: resultsHubName
  METRICS_LOG_INTERVAL_SECONDS: '60'
}
// Elastic Premium only: Flex Consumption refuses these (its runtime is in functionAppConfig, and
// it has no content share). Azure Files takes no identity, hence the one account key
// (WEBSITE_CONTENTAZUREFILECONNECTIONSTRING, in premiumRuntimeSettings below).
var premiumSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  WEBSITE_CONTENTSHARE: contentShareName
}

// Values only the deployment knows. Bicep inlines these variables where they are used (ARM
// JSON variables cannot call reference() or listKeys()), as azuredeploy.json shows.
var runtimeSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
}
var premiumRuntimeSettings = union(premiumSettings, {
  WEBSITE_CONTENTAZUREFILECONNECTIONSTRING: contentShareConnection
})
var contentShareConnection = 'DefaultEndpointsProtocol=https;AccountName=${storageAccountName};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storageAccount.listKeys().keys[0].value}'

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
  }
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: storageSharedKeyAccess || !isFlex
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource checkpointContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: checkpointContainerName
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (isFlex) {
  parent: blobService
  name: deploymentContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for table in tableNames: {
    parent: tableService
    name: '${tablePrefix}${table}'
  }
]

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2023-05-01' = if (!isFlex) {
  parent: storageAccount
  name: 'default'
}

resource contentShare 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = if (!isFlex) {
  parent: fileService
  name: contentShareName
}

resource eventHubsNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: eventHubsNamespaceName
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: eventHubsCapacity
  }
  properties: {
    minimumTlsVersion: '1.2'
  }
}

resource readingsHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubsNamespace
  name: readingsHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

resource scoringConsumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: readingsHub
  name: scoringConsumerGroupName
}

resource resultsHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = if (deployResultsHub) {
  parent: eventHubsNamespace
  name: resultsHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
  }
}

resource amlKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: keyVault
  name: 'aml-endpoint-key'
  properties: {
    value: amlEndpointKey
  }
}

resource powerBiSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(powerBiClientSecret)) {
  parent: keyVault
  name: 'powerbi-client-secret'
  properties: {
    value: powerBiClientSecret
  }
}

resource powerBiPushUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(powerBiPushUrl)) {
  parent: keyVault
  name: 'powerbi-push-url'
  properties: {
    value: powerBiPushUrl
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex
    ? {
        name: 'FC1'
        tier: 'FlexConsumption'
      }
    : {
        name: premiumSku
        tier: 'ElasticPremium'
      }
  properties: {
    reserved: true
    maximumElasticWorkerCount: isFlex ? null : 20
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: isFlex
      ? {
          deployment: {
            storage: {
              type: 'blobContainer'
              value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
              authentication: {
                type: 'SystemAssignedIdentity'
              }
            }
          }
          scaleAndConcurrency: {
            maximumInstanceCount: flexMaximumInstanceCount
            instanceMemoryMB: flexInstanceMemoryMB
          }
          runtime: {
            name: 'python'
            version: '3.11'
          }
        }
      : null
    siteConfig: {
      linuxFxVersion: isFlex ? null : 'Python|3.11'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      // Premium mounts its content share when the site is created, so those settings go in
      // here too; the appsettings resource below then sets the whole list.
      appSettings: isFlex
        ? []
        : [
            {
              name: 'AzureWebJobsStorage__accountName'
              value: storageAccountName
            }
            {
              name: 'FUNCTIONS_EXTENSION_VERSION'
              value: premiumSettings.FUNCTIONS_EXTENSION_VERSION
            }
            {
              name: 'FUNCTIONS_WORKER_RUNTIME'
              value: premiumSettings.FUNCTIONS_WORKER_RUNTIME
            }
            {
              name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING'
              value: contentShareConnection
            }
            {
              name: 'WEBSITE_CONTENTSHARE'
              value: premiumSettings.WEBSITE_CONTENTSHARE
            }
          ]
    }
  }
  dependsOn: [
    deploymentContainer
    contentShare
  ]
}

resource eventHubsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubsNamespace.id, functionApp.id, roles.eventHubsDataSender)
  scope: eventHubsNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource eventHubsReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubsNamespace.id, functionApp.id, roles.eventHubsDataReceiver)
  scope: eventHubsNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, functionApp.id, roles.storageTableDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, functionApp.id, roles.storageBlobDataOwner)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, functionApp.id, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The whole settings list, once the roles exist, so the first start can reach everything.
resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, runtimeSettings, isFlex ? {} : premiumRuntimeSettings)
  dependsOn: [
    eventHubsSender
    eventHubsReceiver
    tableContributor
    blobOwner
    secretsUser
    amlKeySecret
    powerBiSecret
    powerBiPushUrlSecret
    scoringConsumerGroup
    resultsHub
    checkpointContainer
    tables
  ]
}

output functionAppName string = functionApp.name
output ingestUrl string = 'https://${functionApp.properties.defaultHostName}/api/readings'
output storageAccountName string = storageAccount.name
output eventHubsNamespace string = eventHubsHost
output keyVaultName string = keyVault.name
output appInsightsName string = appInsights.name
