// The AWS SDK for JavaScript v3 against a signalite server in strict mode (run by
// tests/integration/test_strict_auth.py). Everything comes from the environment, so that no secret is on a
// command line:
//   SIGNALITE_ENDPOINT, SIGNALITE_REGION, SIGNALITE_CHANNEL (a fresh channel name),
//   SIGNALITE_KEY        {"accessKeyId", "secretAccessKey"}            (a key without session token)
//   SIGNALITE_TOKEN_KEY  {"accessKeyId", "secretAccessKey", "sessionToken"}
// Prints one JSON object: what the SDK returned for good requests, and the error name / HTTP status /
// message for the refused ones (wrong secret, unknown key, missing or wrong session token).
import {
  CreateSignalingChannelCommand,
  DescribeSignalingChannelCommand,
  GetSignalingChannelEndpointCommand,
  KinesisVideoClient,
  ListSignalingChannelsCommand,
  ListTagsForResourceCommand,
  TagResourceCommand,
} from "@aws-sdk/client-kinesis-video";

const env = process.env;
for (const name of ["SIGNALITE_ENDPOINT", "SIGNALITE_REGION", "SIGNALITE_CHANNEL", "SIGNALITE_KEY", "SIGNALITE_TOKEN_KEY"]) {
  if (!env[name]) {
    console.error(`strict_signed.mjs: ${name} is not set`);
    process.exit(2);
  }
}
const endpoint = env.SIGNALITE_ENDPOINT;
const region = env.SIGNALITE_REGION;
const channelName = env.SIGNALITE_CHANNEL;
const key = JSON.parse(env.SIGNALITE_KEY);
const tokenKey = JSON.parse(env.SIGNALITE_TOKEN_KEY);

const clientWith = (credentials) => new KinesisVideoClient({ endpoint, region, credentials, maxAttempts: 1 });

async function failure(credentials, command) {
  try {
    await clientWith(credentials).send(command);
    return { name: null };
  } catch (err) {
    return { name: err.name, httpStatusCode: err.$metadata?.httpStatusCode ?? null, message: String(err.message) };
  }
}

const client = clientWith(tokenKey); // session token sent and signed, as the SDK always does
const result = {};

const created = await client.send(new CreateSignalingChannelCommand({ ChannelName: channelName }));
const arn = created.ChannelARN;
result.create = { ChannelARN: arn, httpStatusCode: created.$metadata.httpStatusCode };

const info = (await client.send(new DescribeSignalingChannelCommand({ ChannelName: channelName }))).ChannelInfo;
result.describe = { ChannelARN: info.ChannelARN, ChannelName: info.ChannelName, ChannelStatus: info.ChannelStatus };

const listed = await client.send(
  new ListSignalingChannelsCommand({
    ChannelNameCondition: { ComparisonOperator: "BEGINS_WITH", ComparisonValue: channelName },
  }),
);
result.list = listed.ChannelInfoList.map((c) => c.ChannelARN);

const endpoints = await client.send(
  new GetSignalingChannelEndpointCommand({
    ChannelARN: arn,
    SingleMasterChannelEndpointConfiguration: { Protocols: ["WSS", "HTTPS"], Role: "VIEWER" },
  }),
);
result.endpoints = endpoints.ResourceEndpointList;

await client.send(new TagResourceCommand({ ResourceARN: arn, Tags: [{ Key: "made-by", Value: "js-v3" }] }));
result.tags = (await client.send(new ListTagsForResourceCommand({ ResourceARN: arn }))).Tags;

// Another key of the same account (no session token) sees the channel.
result.describeWithPlainKey = (
  await clientWith(key).send(new DescribeSignalingChannelCommand({ ChannelARN: arn }))
).ChannelInfo.ChannelARN;

const describe = () => new DescribeSignalingChannelCommand({ ChannelARN: arn });
result.wrongSecret = await failure({ ...key, secretAccessKey: `${key.secretAccessKey}x` }, describe());
result.unknownKey = await failure({ accessKeyId: "AKIDJSNOBODYKNOWS", secretAccessKey: "whatever" }, describe());
result.missingToken = await failure(
  { accessKeyId: tokenKey.accessKeyId, secretAccessKey: tokenKey.secretAccessKey },
  describe(),
);
result.wrongToken = await failure({ ...tokenKey, sessionToken: `${tokenKey.sessionToken}x` }, describe());

console.log(JSON.stringify(result));
