// The AWS SDK for JavaScript v3 against a signalite server: node controlplane.mjs <endpoint-url> [channel-name]
// Prints one JSON object with what the SDK returned; tests/integration/test_cp_js_sdk.py asserts on it.
import {
  CreateSignalingChannelCommand,
  DeleteSignalingChannelCommand,
  DescribeSignalingChannelCommand,
  GetSignalingChannelEndpointCommand,
  KinesisVideoClient,
  ResourceNotFoundException,
} from "@aws-sdk/client-kinesis-video";

const [endpoint, channelName = `js-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`] = process.argv.slice(2);
if (!endpoint) {
  console.error("usage: node controlplane.mjs <endpoint-url> [channel-name]");
  process.exit(2);
}

const client = new KinesisVideoClient({
  endpoint,
  region: "us-west-2",
  credentials: { accessKeyId: "AKIDSIGNALITEJS", secretAccessKey: "signalite-js-secret" },
  maxAttempts: 1,
});

const result = { channelName };

const created = await client.send(
  new CreateSignalingChannelCommand({
    ChannelName: channelName,
    SingleMasterConfiguration: { MessageTtlSeconds: 45 },
    Tags: [{ Key: "made-by", Value: "js-sdk" }],
  }),
);
result.create = { ChannelARN: created.ChannelARN, httpStatusCode: created.$metadata.httpStatusCode };

const described = await client.send(new DescribeSignalingChannelCommand({ ChannelName: channelName }));
const info = described.ChannelInfo;
const createdAt = info.CreationTime;
result.describe = {
  ChannelName: info.ChannelName,
  ChannelARN: info.ChannelARN,
  ChannelType: info.ChannelType,
  ChannelStatus: info.ChannelStatus,
  Version: info.Version,
  MessageTtlSeconds: info.SingleMasterConfiguration?.MessageTtlSeconds,
  creationTimeIsDate: createdAt instanceof Date,
  creationTimeMs: createdAt instanceof Date ? createdAt.getTime() : null,
  requestId: described.$metadata.requestId ?? null,
};

const endpoints = await client.send(
  new GetSignalingChannelEndpointCommand({
    ChannelARN: created.ChannelARN,
    SingleMasterChannelEndpointConfiguration: { Protocols: ["WSS", "HTTPS"], Role: "VIEWER" },
  }),
);
result.endpoints = endpoints.ResourceEndpointList;

try {
  await client.send(new DescribeSignalingChannelCommand({ ChannelName: `${channelName}-missing` }));
  result.missing = { error: null };
} catch (err) {
  result.missing = {
    error: err.name,
    isModeledClass: err instanceof ResourceNotFoundException,
    httpStatusCode: err.$metadata?.httpStatusCode ?? null,
    fault: err.$fault ?? null,
    message: err.message,
  };
}

await client.send(new DeleteSignalingChannelCommand({ ChannelARN: created.ChannelARN, CurrentVersion: info.Version }));
try {
  await client.send(new DescribeSignalingChannelCommand({ ChannelARN: created.ChannelARN }));
  result.afterDelete = { error: null };
} catch (err) {
  result.afterDelete = { error: err.name };
}

console.log(JSON.stringify(result));
